"""pg_stat_statements and pg_stat_user_tables around one load step: snapshot, subtract.

Deltas, not totals since the last reset: a snapshot is taken when the window opens and
another after the users have disconnected (a backend flushes its table counters when its
session ends), and only what changed in between is reported. Statements are keyed on
(userid, dbid, toplevel, queryid) and restricted to the current database.

A subtraction is only meaningful when the counters ran on in between: a server restart
(``pg_postmaster_start_time()`` changed), a reset of the database's statistics
(``pg_stat_database.stats_reset`` changed, e.g. ``pg_stat_reset()``), of
pg_stat_statements (``pg_stat_statements_info.stats_reset``), or a counter that went
backwards (a partial reset) makes that part of the delta unavailable, with the reason;
never a negative number.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from backend_checks.db import redact_sql
from backend_checks.load.models import StatsDelta
from devicelab.errors import first_line

if TYPE_CHECKING:
    import psycopg

__all__ = ["Snapshot", "delta", "ensure_statements", "restarted", "snapshot"]

_STATEMENT_FIELDS = ("calls", "total_exec_time", "rows", "shared_blks_hit", "shared_blks_read")
_TABLE_FIELDS = (
    "seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch",
    "n_tup_ins", "n_tup_upd", "n_tup_del", "n_tup_hot_upd",
)  # fmt: skip
TOP_STATEMENTS = 25


class Snapshot(BaseModel):
    """The cumulative counters at one instant."""

    model_config = ConfigDict(frozen=True)

    taken_at: float
    statements: dict[str, dict[str, Any]] | None
    tables: dict[str, dict[str, float]]
    postmaster_start: str | None = None
    tables_reset: str | None = None
    statements_reset: str | None = None


def ensure_statements(conn: psycopg.Connection[Any], *, allow_writes: bool) -> tuple[str, str]:
    """The schema holding pg_stat_statements ("" when unavailable) and a note saying why not.

    Creates the extension only when the server preloads it and ``allow_writes`` is set.
    Raises psycopg.Error only for what is not a missing privilege (the statistics are
    optional: a role that may not read the setting or create the extension gets a note).
    """
    import psycopg

    try:
        return _ensure_statements(conn, allow_writes=allow_writes)
    except psycopg.errors.InsufficientPrivilege as exc:
        reason = first_line(exc)
        return "", f"statement statistics are not available to this role ({reason})"


def _ensure_statements(conn: psycopg.Connection[Any], *, allow_writes: bool) -> tuple[str, str]:
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_stat_statements'"
    ).fetchone()
    if row:
        return str(row[0]), ""
    setting = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    preload = str(setting[0]) if setting else ""
    if "pg_stat_statements" not in preload:
        return "", "pg_stat_statements is not in shared_preload_libraries"
    if not allow_writes:
        return "", "CREATE EXTENSION pg_stat_statements needed (refused without --allow-writes)"
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return _ensure_statements(conn, allow_writes=False)


def snapshot(conn: psycopg.Connection[Any], statements_schema: str) -> Snapshot:
    """The counters now (``conn`` in autocommit: each query sees fresh statistics), with
    when the server started and when its statistics were last reset."""
    statements: dict[str, dict[str, Any]] | None = None
    marks = conn.execute(
        "SELECT pg_postmaster_start_time()::text, (SELECT stats_reset::text FROM"
        " pg_stat_database WHERE datname = current_database())"
    ).fetchone()
    statements_reset = None
    if statements_schema and conn.info.server_version >= 140000:  # the view is of 14+
        reset_row = conn.execute(
            f'SELECT stats_reset::text FROM "{statements_schema}".pg_stat_statements_info'
        ).fetchone()
        statements_reset = str(reset_row[0]) if reset_row and reset_row[0] else None
    if statements_schema:
        rows = conn.execute(
            "SELECT userid::regrole::text, toplevel, queryid, left(query, 300), "
            + ", ".join(_STATEMENT_FIELDS)
            + f' FROM "{statements_schema}".pg_stat_statements'
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
        statements = {}
        for role, toplevel, queryid, query, *values in rows:
            key = f"{role}|{toplevel}|{queryid}"
            # The text as sent: an ALTER ROLE ... PASSWORD of another session keeps its
            # literal (a load step's results would carry it).
            shown = redact_sql(query) if query else query
            statements[key] = {"role": role, "toplevel": toplevel, "query": shown} | dict(
                zip(_STATEMENT_FIELDS, values, strict=True)
            )
    rows = conn.execute(
        "SELECT schemaname || '.' || relname, "
        + ", ".join(f"coalesce({f}, 0)" for f in _TABLE_FIELDS)
        + " FROM pg_stat_user_tables"
    ).fetchall()
    tables = {
        name: {f: float(v) for f, v in zip(_TABLE_FIELDS, values, strict=True)}
        for name, *values in rows
    }
    return Snapshot(
        taken_at=time.time(),
        statements=statements,
        tables=tables,
        postmaster_start=str(marks[0]) if marks and marks[0] else None,
        tables_reset=str(marks[1]) if marks and marks[1] else None,
        statements_reset=statements_reset,
    )


def restarted(before: Snapshot, after: Snapshot) -> str:
    """Why the server's counters and processes are not those of ``before`` ("" when the
    server did not restart in between)."""
    if before.postmaster_start and before.postmaster_start != after.postmaster_start:
        return (
            f"the server restarted during the step (at {after.postmaster_start}):"
            " its statistics and processes are new"
        )
    return ""


def delta(before: Snapshot, after: Snapshot, note: str = "") -> StatsDelta:
    """What changed between two snapshots: statements by total time, tables touched.

    A part whose counters were reset in between (see the module's docstring) is returned
    as unavailable with the reason.
    """
    if reason := restarted(before, after):
        return StatsDelta(
            statements_available=False,
            statements_note=reason,
            tables_available=False,
            tables_note=reason,
        )
    tables_note = ""
    if before.tables_reset != after.tables_reset:
        tables_note = (
            f"the database's statistics were reset during the step (at {after.tables_reset}):"
            " the table deltas are unknown"
        )
    tables: list[dict[str, Any]] = []
    for name, counters in sorted(after.tables.items()):
        old = before.tables.get(name, {})
        diff = {f: counters[f] - old.get(f, 0.0) for f in _TABLE_FIELDS}
        if any(v < 0 for v in diff.values()):
            tables_note = tables_note or (
                f"counters of {name} went backwards during the step (reset): the table"
                " deltas are unknown"
            )
        if any(diff.values()):
            tables.append({"table": name} | {f: int(v) for f, v in diff.items()})
    tables_part: dict[str, Any] = (
        {"tables_available": False, "tables_note": tables_note}
        if tables_note
        else {"tables": tables}
    )
    if before.statements is None or after.statements is None:
        return StatsDelta(statements_available=False, statements_note=note, **tables_part)
    if before.statements_reset != after.statements_reset:
        return StatsDelta(
            statements_available=False,
            statements_note=f"pg_stat_statements was reset during the step (at"
            f" {after.statements_reset}): the statement deltas are unknown",
            **tables_part,
        )
    statements = []
    backwards = 0
    for key, row in after.statements.items():
        old = before.statements.get(key, {})
        calls = int(row["calls"]) - int(old.get("calls", 0))
        exec_ms = float(row["total_exec_time"]) - float(old.get("total_exec_time", 0.0))
        if calls < 0 or exec_ms < 0:
            # One entry evicted and counted again (pg_stat_statements.max), or reset alone:
            # its delta is unknown; the others stand.
            backwards += 1
            continue
        if calls == 0:
            continue
        statements.append(
            {
                "query": row["query"],
                "role": row["role"],
                "toplevel": row["toplevel"],
                "calls": calls,
                "total_exec_ms": round(exec_ms, 3),
                "mean_exec_ms": round(exec_ms / calls, 4),
                "rows": int(row["rows"]) - int(old.get("rows", 0)),
                "shared_blks_hit": int(row["shared_blks_hit"]) - int(old.get("shared_blks_hit", 0)),
                "shared_blks_read": int(row["shared_blks_read"])
                - int(old.get("shared_blks_read", 0)),
            }
        )
    statements.sort(key=lambda s: -float(s["total_exec_ms"]))
    toplevel = [s for s in statements if s["toplevel"] is not False]
    return StatsDelta(
        statements_available=True,
        statements_note=f"{backwards} statements left out: their counters went backwards"
        " during the step (evicted or reset)"
        if backwards
        else "",
        statements=statements[:TOP_STATEMENTS],
        statements_exec_ms=round(sum(float(s["total_exec_ms"]) for s in toplevel), 3),
        statements_calls=sum(int(s["calls"]) for s in toplevel),
        **tables_part,
    )
