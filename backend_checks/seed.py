"""Seeding an empty database once, however many runs start on it at the same moment.

The embedded default is shared: two `devicelab run`s, a run and a `backend check`, or the
workers of a pytest-xdist session may all find the managed database empty at once. Each
deciding "empty" on its own, then seeding, made the second replace the tables the first
was already using (its run conversation gone, its Realtime subscriptions refused). Here
the decision is taken under the generator's advisory lock: the first seeds, the others
wait for it and then find the data there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backend_checks.datagen import LOCK_KEY, DatagenParams, DatagenReport, generate

if TYPE_CHECKING:
    import psycopg

__all__ = ["has_messages", "seed_if_empty"]


def has_messages(conn: psycopg.Connection[Any]) -> bool:
    """True when ``public.messages`` exists and holds a row. Read-only."""
    row = conn.execute("SELECT to_regclass('public.messages') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return False
    return conn.execute("SELECT 1 FROM public.messages LIMIT 1").fetchone() is not None


def seed_if_empty(conn: psycopg.Connection[Any], params: DatagenParams) -> DatagenReport | None:
    """Generate ``params`` into ``conn``'s database unless it holds messages, deciding
    under the generator's lock (another seeding in progress is waited for, up to its
    15-minute statement timeout). ``conn`` must not be inside a transaction.

    Returns the DatagenReport, or None when the database already had messages. Raises
    what :func:`backend_checks.datagen.generate` raises (UnsafeActionRefused,
    BackendUnavailable); psycopg.Error when the lock or the check fails.
    """
    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = '15min'")
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        with conn.transaction():
            if has_messages(conn):
                return None
        # The generator takes the same lock again: advisory locks are re-entrant for the
        # session holding them, whatever their level.
        return generate(conn, params, allow_writes=True)
    finally:
        _unlock(conn)


def _unlock(conn: psycopg.Connection[Any]) -> None:
    import psycopg

    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    except psycopg.Error:  # a broken connection: its locks went with it
        pass
