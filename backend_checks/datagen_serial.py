"""The serial path of the data generator: everything in one transaction on one connection.

Taken when the two-connection path (:mod:`backend_checks.datagen_parallel`) is not
available (a caller's open transaction, no second connection, no CREATE for the staging
schema, triggers of the app's own on auth.users) or with ``parallel=False``. It gives the
same rows and catalog: the schema, then the keys and indexes of the big tables dropped,
the load, the keys and indexes rebuilt (building sorted is several times faster than
maintaining them row by row), ANALYZE and the mark, committed together or not at all.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from backend_checks.datagen import (
    LOCK_KEY,
    META_TABLE,
    OUR_USERS,
    STAGE_SCHEMA,
    TABLES,
    DatagenParams,
    DatagenReport,
    auth_user_triggers,
    install_schema,
    mark,
    refuse_foreign,
    session_settings,
)
from backend_checks.datagen_sql import LoadSql

if TYPE_CHECKING:
    import psycopg

__all__ = ["generate"]


def generate(
    conn: psycopg.Connection[Any], params: DatagenParams, *, force: bool, started: float
) -> DatagenReport:
    """Everything in one transaction on ``conn``: schema, data, indexes, ANALYZE, mark."""
    phases: dict[str, float] = {}
    sql = LoadSql(params)
    with conn.transaction():
        refuse_foreign(conn, force=force)
        _timed(phases, "schema", lambda: _prepare(conn))
        dropped = _timed(phases, "drop_indexes", lambda: _drop_keys(conn))
        _timed(
            phases,
            "stage",
            lambda: _run(
                conn, [*sql.conversations_stage(), *sql.pool_stage(), sql.passwords_stage()]
            ),
        )
        _timed(phases, "users", lambda: _insert_users(conn, sql))
        _timed(phases, "messages", lambda: _run(conn, [sql.messages()]))
        _timed(phases, "conversations", lambda: _run(conn, [sql.conversations()]))
        _timed(phases, "receipts", lambda: _run(conn, [sql.receipts()]))
        _timed(phases, "indexes", lambda: _restore_keys(conn, dropped))
        for trigger in _LOAD_FILLS:
            conn.execute(f"ALTER TABLE public.messages ENABLE TRIGGER {trigger}")
        _timed(phases, "analyze", lambda: conn.execute(f"ANALYZE {', '.join(TABLES)}"))
        counts = _counts(conn)
        mark(conn, params, counts)
    return DatagenReport(
        params=params,
        counts=counts,
        phases=phases,
        seconds=time.perf_counter() - started,
        mode="serial",
    )


def _insert_users(conn: psycopg.Connection[Any], sql: LoadSql) -> None:
    """Insert the users, then their profiles. Supabase's guides have apps make each new
    user's profile in an AFTER INSERT trigger on auth.users: the rows it made for our
    users give way to the generated ones (the tables that reference profiles are still
    empty here, so nothing cascades)."""
    _run(conn, [sql.users()])
    if auth_user_triggers(conn):
        conn.execute(
            f"DELETE FROM public.profiles WHERE id IN (SELECT id FROM auth.users WHERE {OUR_USERS})"
        )
    _run(conn, [sql.profiles()])


def _timed(phases: dict[str, float], name: str, step: Any) -> Any:
    start = time.perf_counter()
    result = step()
    phases[name] = round(time.perf_counter() - start, 3)
    return result


#: The schema's triggers on messages whose work the load does set-based (the search
#: vectors from the sentence pool, last_message_at from the messages): off while it runs.
_LOAD_FILLS = ("messages_search_vector_trg", "messages_bump_conversation_trg")


def _prepare(conn: psycopg.Connection[Any]) -> None:
    session_settings(conn)
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    # A parallel run that died (killed, server restarted) leaves its staging schema.
    conn.execute(f"DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE")
    install_schema(conn)
    # TRUNCATE gives the tables new files: on a wal_level=minimal server (the managed
    # one) the load below then skips WAL entirely.
    conn.execute(
        "TRUNCATE public.message_read_receipts, public.messages, public.conversations,"
        " public.profiles"
    )
    conn.execute(f"DELETE FROM auth.users WHERE {OUR_USERS}")
    conn.execute(f"DELETE FROM {META_TABLE} WHERE key = 'datagen'")
    for trigger in _LOAD_FILLS:
        conn.execute(f"ALTER TABLE public.messages DISABLE TRIGGER {trigger}")


class _Dropped(BaseModel):
    keys: list[tuple[str, str, str]]  # (table, constraint, definition)
    foreign: list[tuple[str, str, str]]
    indexes: list[str]


def _drop_keys(conn: psycopg.Connection[Any]) -> _Dropped:
    """Drop the keys and indexes of the three big tables (and the foreign keys pointing at
    them); returns their definitions for :func:`_restore_keys`. Partial indexes stay:
    their predicate (``reply_to_id IS NOT NULL``) matches no generated row, so keeping
    them costs a test per row, rebuilding them a scan of the table."""
    # conversations too: rebuilt, its GIN index gets real statistics (filled row by row
    # through the pending list, the planner would price it as a full index scan).
    big = (
        "('public.messages'::regclass, 'public.message_read_receipts'::regclass,"
        " 'public.conversations'::regclass)"
    )
    cons = conn.execute(
        f"""SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype
            FROM pg_constraint
            WHERE contype IN ('p', 'u', 'f', 'x')
              AND (conrelid IN {big} OR confrelid IN {big})
            ORDER BY contype = 'f' DESC"""  # foreign keys go first, they depend on the keys
    ).fetchall()
    indexes = conn.execute(
        f"""SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i
            WHERE indrelid IN {big} AND indpred IS NULL
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"""
    ).fetchall()
    for table, name, _definition, _kind in cons:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _definition in indexes:
        conn.execute(f"DROP INDEX {name}")
    return _Dropped(
        keys=[(t, n, d) for t, n, d, k in cons if k != "f"],
        foreign=[(t, n, d) for t, n, d, k in cons if k == "f"],
        indexes=[d for _n, d in indexes],
    )


def _restore_keys(conn: psycopg.Connection[Any], dropped: _Dropped) -> None:
    for table, name, definition in dropped.keys:
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for definition in dropped.indexes:
        conn.execute(definition)
    for table, name, definition in dropped.foreign:
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


def _run(conn: psycopg.Connection[Any], statements: list[tuple[str, dict[str, Any]]]) -> None:
    for sql, params in statements:
        conn.execute(sql, params or None)


def _counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in TABLES:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        counts[table.split(".")[-1]] = int(row[0]) if row else 0
    return counts
