"""pg_stat_statements' history of one database: the window its timings cover, and the reset
that starts a new one.

pg_stat_statements is cumulative: a statement that was slow once (an index dropped, then
rebuilt) keeps its old mean until its entry is reset, and devicelab's managed cluster
reuses one database for every run. A datagen replaces the data set, so the timings of the
old one describe another data set: :func:`reset_database_statements` drops this database's
entries (``pg_stat_statements_reset(0, <dboid>, 0)``, PostgreSQL 14+) and records when in
``devicelab_meta`` (key :data:`RESET_KEY`), since a reset of one database leaves
``pg_stat_statements_info.stats_reset`` (moved only by a reset of everything) as it was.
:func:`statements_since` reads both back, for ``slow_queries`` to say what window it judged.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from backend_checks.datagen import META_TABLE

if TYPE_CHECKING:
    import psycopg

__all__ = ["RESET_KEY", "Since", "reset_database_statements", "statements_since"]

log = logging.getLogger(__name__)

#: The devicelab_meta key of a datagen's reset: {"at": timestamptz, "dbid": oid}.
RESET_KEY = "statements_reset"
#: The reset function this role may execute, schema-qualified, with this database's oid.
#: pronargs >= 3: the per-database signature (PostgreSQL 14 and 15-16 have three, 17 adds
#: a defaulted fourth); older ones have none and are left alone.
_RESET_FUNCTION = """
    SELECT quote_ident(n.nspname), (SELECT oid FROM pg_database
                                    WHERE datname = current_database())
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    JOIN pg_proc p ON p.pronamespace = e.extnamespace
    WHERE e.extname = 'pg_stat_statements' AND p.proname = 'pg_stat_statements_reset'
      AND p.pronargs >= 3 AND has_function_privilege(p.oid, 'EXECUTE')
    LIMIT 1"""


class Since(NamedTuple):
    """When the timings of this database's statements start: ``at`` (None: not readable),
    ``by`` (what reset them: ``pg_stat_statements_reset`` of everything, or ``datagen``),
    and ``dbid``, the database's oid (for the reset that clears only its entries)."""

    at: datetime | None
    by: str
    dbid: int

    def label(self) -> str:
        """``"since 2026-12-01 05:02 UTC at the earliest (pg_stat_statements_reset)"``, or ""
        unknown: a reset of one database's entries by hand moves neither date we read, so
        the timings may run from later than that."""
        if self.at is None:
            return ""
        return f"since {self.at.astimezone(UTC):%Y-%m-%d %H:%M} UTC at the earliest ({self.by})"

    def said(self, *, failed: bool) -> str:
        """The end of slow_queries' reason: since when its timings run (nothing when that
        is not known and it passed), and, when it ``failed``, that they are cumulative and
        the reset that clears this database's: a mean stays what it was after its cause is
        fixed (an index restored by hand) until its entry is reset."""
        label = self.label()
        if not failed:
            return f"; timings {label}" if label else ""
        reset = f"SELECT pg_stat_statements_reset(0, {self.dbid}, 0)"
        when = label or "since pg_stat_statements last reset (when: not readable)"
        return (
            f"; timings are cumulative, {when}: a statement fixed since keeps its old mean"
            f" until {reset} (this database's entries; a datagen on the managed cluster does"
            " it) starts afresh"
        )


def reset_database_statements(conn: psycopg.Connection[Any]) -> bool:
    """Reset the pg_stat_statements entries of ``conn``'s database and record when in
    devicelab_meta. Only on an idle connection (the reset is not transactional: inside a
    caller's transaction the data it describes may still roll back), where the extension
    is installed in this database and the role may execute the reset; otherwise nothing
    is done. Returns whether the entries were reset. Raises nothing of the database's
    (a refusal is logged: a datagen never fails for it)."""
    import psycopg

    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        log.info("pg_stat_statements not reset: the connection is inside a transaction")
        return False
    try:
        with conn.transaction():
            found = conn.execute(_RESET_FUNCTION).fetchone()
            if found is None:
                return False
            schema, dbid = str(found[0]), int(found[1])
            # The schema comes quoted from quote_ident: no user text reaches the SQL.
            conn.execute(f"SELECT {schema}.pg_stat_statements_reset(0, %s::oid, 0)", (dbid,))
    except psycopg.Error as exc:  # not preloaded, refused: the old timings stay
        log.info("pg_stat_statements not reset: %s", str(exc).strip().splitlines()[0])
        return False
    try:
        with conn.transaction():
            # Unrecorded where we may say so (a superuser's setting), as datagen's load.
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute("SET LOCAL pg_stat_statements.track = 'none'")
            conn.execute(
                f"""INSERT INTO {META_TABLE} (key, value)
                    VALUES (%s, jsonb_build_object('at', now(), 'dbid', %s::int8))
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""",
                (RESET_KEY, dbid),
            )
    except psycopg.Error as exc:  # the reset stands; only its time goes unsaid
        log.info("pg_stat_statements reset not recorded: %s", str(exc).strip().splitlines()[0])
    log.info("pg_stat_statements entries of database oid %s reset", dbid)
    return True


def statements_since(conn: psycopg.Connection[Any]) -> Since:
    """When the pg_stat_statements timings of ``conn``'s database start: the later of
    ``pg_stat_statements_info.stats_reset`` and a datagen's reset of this database (its
    devicelab_meta row), each read in a savepoint of the caller's transaction, so one the
    role may not read (or PostgreSQL 13, without pg_stat_statements_info) is left out.
    Returns a Since (``at`` None when neither is readable). Raises psycopg.Error only
    when the connection itself fails."""
    import psycopg

    row = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
    dbid = int(row[0]) if row else 0
    found: list[tuple[datetime, str]] = []
    reads = (
        ("SELECT stats_reset FROM pg_stat_statements_info", (), "pg_stat_statements_reset"),
        (
            f"""SELECT (value ->> 'at')::timestamptz FROM {META_TABLE}
                WHERE key = %s AND (value ->> 'dbid')::int8 = %s""",
            (RESET_KEY, dbid),
            "datagen reset this database's statements",
        ),
    )
    for sql, params, by in reads:
        try:
            with conn.transaction():
                got = conn.execute(sql, params).fetchone()
        except psycopg.Error:
            continue
        if got and got[0] is not None:
            found.append((got[0], by))
    if not found:
        return Since(None, "", dbid)
    at, by = max(found, key=lambda item: item[0])
    return Since(at, by, dbid)
