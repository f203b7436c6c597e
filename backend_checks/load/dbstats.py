"""pg_stat_statements and pg_stat_user_tables around one load step: snapshot, subtract.

Deltas, not totals since the last reset: a snapshot is taken when the window opens and
another after the users have disconnected (a backend flushes its table counters when its
session ends), and only what changed in between is reported. Statements are keyed on
(userid, dbid, toplevel, queryid) and restricted to the current database.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from backend_checks.load.models import StatsDelta

if TYPE_CHECKING:
    import psycopg

__all__ = ["Snapshot", "delta", "ensure_statements", "snapshot"]

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


def ensure_statements(conn: psycopg.Connection[Any], *, allow_writes: bool) -> tuple[str, str]:
    """The schema holding pg_stat_statements ("" when unavailable) and a note saying why not.

    Creates the extension only when the server preloads it and ``allow_writes`` is set.
    """
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
    return ensure_statements(conn, allow_writes=False)


def snapshot(conn: psycopg.Connection[Any], statements_schema: str) -> Snapshot:
    """The counters now (``conn`` in autocommit: each query sees fresh statistics)."""
    statements: dict[str, dict[str, Any]] | None = None
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
            statements[key] = {"role": role, "toplevel": toplevel, "query": query} | dict(
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
    return Snapshot(taken_at=time.time(), statements=statements, tables=tables)


def delta(before: Snapshot, after: Snapshot, note: str = "") -> StatsDelta:
    """What changed between two snapshots: statements by total time, tables touched."""
    tables = []
    for name, counters in sorted(after.tables.items()):
        old = before.tables.get(name, {})
        diff = {f: counters[f] - old.get(f, 0.0) for f in _TABLE_FIELDS}
        if any(diff.values()):
            tables.append({"table": name} | {f: int(v) for f, v in diff.items()})
    if before.statements is None or after.statements is None:
        return StatsDelta(statements_available=False, statements_note=note, tables=tables)
    statements = []
    for key, row in after.statements.items():
        old = before.statements.get(key, {})
        calls = int(row["calls"]) - int(old.get("calls", 0))
        if calls <= 0:
            continue
        exec_ms = float(row["total_exec_time"]) - float(old.get("total_exec_time", 0.0))
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
        statements=statements[:TOP_STATEMENTS],
        statements_exec_ms=round(sum(float(s["total_exec_ms"]) for s in toplevel), 3),
        statements_calls=sum(int(s["calls"]) for s in toplevel),
        tables=tables,
    )
