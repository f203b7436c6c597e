"""The swap of the data generator's two-connection path: the staged tables replace the
live ones in one short transaction (:mod:`backend_checks.datagen_parallel` builds them).

It drops the live tables and moves the staged ones into ``public``, re-runs the schema
(trigger, RLS, policies, grants, view, functions), puts back the reference server's
Realtime capture triggers where the old tables had them, inserts ``auth.users`` and its
foreign keys, marks, and commits; or refuses (SwapRefused, rolled back) when dropping the
old tables would lose something the schema does not recreate. It waits for the live
tables' locks a second at a time (see :func:`swap_when_free`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from backend_checks.datagen import (
    META_TABLE,
    OUR_USERS,
    STAGE_SCHEMA,
    TABLES,
    DatagenParams,
    LoadSql,
    install_schema,
    mark,
    refuse_foreign,
    session_settings,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["STAGED", "SwapRefused", "swap_when_free"]

log = logging.getLogger(__name__)

#: The tables the parallel path stages and swaps in.
STAGED = ("profiles", "conversations", "messages", "message_read_receipts")


class SwapRefused(Exception):
    """The swap would lose something the schema does not recreate."""


_ATTACHED = """
SELECT 'policy ' || c.relname || ' ' || p.polname
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE c.oid = ANY(%(t)s)
UNION ALL
SELECT 'trigger ' || c.relname || ' ' || g.tgname
FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
WHERE c.oid = ANY(%(t)s) AND NOT g.tgisinternal
UNION ALL
SELECT 'publication ' || c.relname || ' ' || b.pubname
FROM pg_publication_rel r JOIN pg_publication b ON b.oid = r.prpubid
JOIN pg_class c ON c.oid = r.prrelid WHERE c.oid = ANY(%(t)s)
UNION ALL
SELECT 'rule ' || c.relname || ' ' || w.rulename
FROM pg_rewrite w JOIN pg_class c ON c.oid = w.ev_class WHERE c.oid = ANY(%(t)s)
UNION ALL
SELECT 'grant ' || c.relname || ' ' || a::text
FROM pg_class c, unnest(c.relacl) a WHERE c.oid = ANY(%(t)s)
UNION ALL
SELECT 'owner ' || c.relname || ' ' || c.relowner::regrole::text
FROM pg_class c WHERE c.oid = ANY(%(t)s)
UNION ALL
SELECT 'table ' || c.relname || ' replica identity ' || c.relreplident::text
       || ' force rls ' || c.relforcerowsecurity::text
FROM pg_class c WHERE c.oid = ANY(%(t)s)
"""


def _attached(conn: psycopg.Connection[Any]) -> set[str]:
    """What hangs on the live tables and goes with them when they are dropped."""
    rows = conn.execute(
        "SELECT array_remove(ARRAY["
        + ", ".join(f"to_regclass('public.{t}')" for t in STAGED)
        + "], NULL)::oid[]"
    ).fetchone()
    oids = rows[0] if rows else []
    if not oids:
        return set()
    return {r[0] for r in conn.execute(_ATTACHED, {"t": oids}).fetchall()}


#: The reference server's Realtime captures changes with this trigger on each table it
#: watches (backend_checks/reference/sql/realtime.sql); the swap puts it back.
_CAPTURE_TRIGGER = "devicelab_realtime_capture"


#: How long the swap waits for the live tables' locks before it lets go and tries again:
#: queued for an ACCESS EXCLUSIVE lock it would stall every new reader of the tables.
_SWAP_LOCK_TIMEOUT = "1s"
#: How long the swap keeps trying (the statement timeout of datagen's transactions).
_SWAP_PATIENCE_S = 900.0

_HOLDERS = """
SELECT DISTINCT a.pid, coalesce(nullif(a.application_name, ''), 'no application name'),
       coalesce(a.state, '?')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> pg_backend_pid()
  AND l.relation IN (SELECT to_regclass(t) FROM unnest(%s::text[]) t)
ORDER BY a.pid
"""


def swap_when_free(
    conn: psycopg.Connection[Any],
    params: DatagenParams,
    *,
    force: bool,
    external: list[tuple[str, str]],
    counts: dict[str, int],
) -> None:
    """:func:`_swap`, tried again while other sessions hold the live tables (an open
    transaction that read them, a long query): each try waits a second at most, so
    readers are not queued behind it, and the first wait names who holds them. Raises
    what _swap raises, and LockNotAvailable after ``_SWAP_PATIENCE_S``."""
    import psycopg

    deadline = time.monotonic() + _SWAP_PATIENCE_S
    told = False
    while True:
        try:
            _swap(conn, params, force=force, external=external, counts=counts)
            return
        except psycopg.errors.LockNotAvailable:
            if time.monotonic() > deadline:
                raise
            if not told:
                told = True
                # What the swap locks whole: the tables, the view over them, auth.users.
                tables = [f"public.{t}" for t in STAGED]
                tables += ["public.conversation_list", "auth.users"]
                with conn.transaction():
                    holders = conn.execute(_HOLDERS, (tables,)).fetchall()
                who = ", ".join(f"pid {p} ({app}, {state})" for p, app, state in holders)
                log.warning(
                    "datagen: waiting for other sessions to let go of the live tables: %s",
                    who or "(gone already)",
                )
            time.sleep(0.5)


def _swap(
    conn: psycopg.Connection[Any],
    params: DatagenParams,
    *,
    force: bool,
    external: list[tuple[str, str]],
    counts: dict[str, int],
) -> None:
    """Replace the live tables with the staged ones, in one transaction, then add
    ``external`` (table, ADD FOREIGN KEY ... to auth.users) once the users are in. Raises
    SwapRefused (rolled back) when that would lose something of someone else's."""
    import psycopg

    sql = LoadSql(params)
    with conn.transaction():
        session_settings(conn)
        conn.execute(f"SET LOCAL lock_timeout = '{_SWAP_LOCK_TIMEOUT}'")
        refuse_foreign(conn, force=force)
        before = _attached(conn)
        captured = [t for t in STAGED if f"trigger {t} {_CAPTURE_TRIGGER}" in before]
        conn.execute("DROP VIEW IF EXISTS public.conversation_list")
        conn.execute(
            "DROP FUNCTION IF EXISTS public.send_message(uuid, text, text, text, uuid, jsonb)"
        )
        try:
            with conn.transaction():  # a savepoint: the error is ours to translate
                conn.execute(
                    "DROP TABLE IF EXISTS " + ", ".join(f"public.{t}" for t in reversed(STAGED))
                )
        except psycopg.errors.DependentObjectsStillExist as exc:
            raise SwapRefused(f"other objects depend on the live tables: {exc}") from exc
        for table in STAGED:
            conn.execute(f"ALTER TABLE {STAGE_SCHEMA}.{table} SET SCHEMA public")
        install_schema(conn)
        conn.execute(f"DELETE FROM {META_TABLE} WHERE key = 'datagen'")
        conn.execute(f"DELETE FROM auth.users WHERE {OUR_USERS}")
        for statement, values in (sql.passwords_stage(), sql.users()):
            conn.execute(statement, values or None)
        for table, definition in external:
            conn.execute(f"ALTER TABLE public.{table} {definition}")
        for table in captured:
            # Without it the swap would be refused for a trigger of ours, and every run
            # after a `devicelab run` or `backend check` took the serial path, where that
            # trigger fires per row: 100K messages in 10 s instead of 1.7 s.
            conn.execute("SELECT devicelab_realtime.watch(%s::regclass)", (f"public.{table}",))
        conn.execute("ANALYZE auth.users")
        row = conn.execute("SELECT count(*) FROM auth.users").fetchone()
        counts["users"] = int(row[0]) if row else 0
        lost = before - _attached(conn)
        if lost:
            raise SwapRefused(f"the swap would lose {', '.join(sorted(lost))}")
        conn.execute(f"DROP SCHEMA {STAGE_SCHEMA} CASCADE")
        mark(conn, params, {t.split(".")[-1]: counts[t.split(".")[-1]] for t in TABLES})
