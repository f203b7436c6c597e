"""Ctrl-C at the worst moment of a write (real PostgreSQL): the interrupt comes out as it
went in (the CLI prints "devicelab: interrupted", exit 130), and what datagen made for the
run is not left behind. The interrupts are raised in-process, where a SIGINT can land."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.pq import TransactionStatus

from backend_checks import db
from backend_checks.datagen import DatagenParams, run_datagen
from backend_checks.server_health import vacuum

ADMIN_DSN = os.environ.get("DEVICELAB_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")


class _InterruptedOnceCreated:
    """The maintenance connection, with a Ctrl-C arriving just after the server committed
    our CREATE DATABASE and before its answer was read (psycopg raises KeyboardInterrupt
    out of execute then)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def __enter__(self) -> _InterruptedOnceCreated:
        self.conn.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.__exit__(*exc)  # type: ignore[arg-type]

    def execute(self, query: Any, params: Any = None) -> Any:
        cursor = self.conn.execute(query, params)
        if isinstance(query, sql.Composable) and "CREATE DATABASE" in query.as_string(self.conn):
            raise KeyboardInterrupt
        return cursor


def test_ctrl_c_as_the_new_database_is_committed_leaves_no_database(
    fresh_db_name: Callable[[], str],
    exists_db: Callable[[str], bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It left an empty database: ensure_database never returned the name, so datagen
    # had nothing to drop.
    name = fresh_db_name()
    real = db._maintenance
    wrapped: list[int] = []

    def interrupted(dsn: str) -> Any:
        conn = real(dsn)
        if conn is None or wrapped:
            return conn  # the drop's own connection is not interrupted
        wrapped.append(1)
        return _InterruptedOnceCreated(conn)

    monkeypatch.setattr(db, "_maintenance", interrupted)
    params = DatagenParams(messages=100, users=10, conversations=5)
    with pytest.raises(KeyboardInterrupt):
        run_datagen(f"{ADMIN_DSN} dbname={name}", params, allow_writes=True)
    assert wrapped, "the CREATE DATABASE was not reached"
    assert not exists_db(name)


class _InterruptedVacuum(psycopg.Connection[Any]):
    """A connection on which a Ctrl-C lands while a VACUUM runs, once psycopg sent it and
    before its answer: the connection is left ACTIVE, as the audit's SIGINT left it."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        if isinstance(query, sql.Composable) and "VACUUM" in query.as_string(self):
            self.pgconn.send_query(b"SELECT pg_sleep(30)")
            raise KeyboardInterrupt
        return super().execute(query, params, **kwargs)


def test_ctrl_c_during_vacuum_comes_out_as_the_interrupt(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It came out as ProgrammingError "can't change 'autocommit' now: connection in
    # transaction status ACTIVE" (a traceback, exit 1) from vacuum's restore.
    with psycopg.connect(empty_db, autocommit=True) as admin:
        admin.execute("CREATE TABLE t (i int)")
    conn = _InterruptedVacuum.connect(empty_db)
    try:
        with pytest.raises(KeyboardInterrupt):
            vacuum(conn, ["public.t"])
        assert conn.closed or conn.info.transaction_status != TransactionStatus.ACTIVE
    finally:
        conn.close()
    with psycopg.connect(empty_db, autocommit=True) as admin:  # the sleep did not stay
        sleeping = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
            " AND state = 'active' AND datname = current_database()"
        ).fetchone()
    assert sleeping == (0,)
