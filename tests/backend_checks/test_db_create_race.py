"""Jobs that share a server: creating a missing database at the same time as another job,
and dropping one we created while another job has started on it (real PostgreSQL)."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from backend_checks import db
from backend_checks.db import drop_database, ensure_database

ADMIN_DSN = os.environ.get("DEVICELAB_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(f"{ADMIN_DSN} dbname=postgres", autocommit=True, connect_timeout=3)


def _exists(name: str) -> bool:
    with _admin() as conn:
        return bool(
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        )


@pytest.fixture
def fresh_name(pg_server: None) -> Iterator[Callable[[], str]]:
    """A factory of unused database names (dl_test_<hex>); every one is dropped after."""
    names: list[str] = []

    def make() -> str:
        names.append(f"dl_test_{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield make
    with _admin() as conn:
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


class _CreatedBetween:
    """The maintenance connection, with another session creating the database just before
    our CREATE DATABASE runs (after our look found none): the race, made certain."""

    def __init__(self, conn: psycopg.Connection[Any], name: str) -> None:
        self.conn = conn
        self.name = name

    def __enter__(self) -> _CreatedBetween:
        self.conn.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.__exit__(*exc)  # type: ignore[arg-type]

    def execute(self, query: Any, params: Any = None) -> Any:
        if isinstance(query, sql.Composable) and "CREATE DATABASE" in query.as_string(self.conn):
            with _admin() as other:
                other.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        return self.conn.execute(query, params)


def test_a_database_created_between_look_and_create_counts_as_there(
    fresh_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It failed: "database ... does not exist and cannot be created: ... already exists".
    name = fresh_name()
    real = db._maintenance

    def racing(dsn: str) -> _CreatedBetween:
        conn = real(dsn)
        assert conn is not None
        return _CreatedBetween(conn, name)

    monkeypatch.setattr(db, "_maintenance", racing)
    assert ensure_database(f"{ADMIN_DSN} dbname={name}") is None  # not ours: never dropped
    assert _exists(name)


def _all_at_once(dsn: str, jobs: int) -> tuple[list[str | None], list[BaseException]]:
    """:func:`ensure_database` of ``dsn`` from ``jobs`` threads released together; returns
    what they returned and what they raised."""
    start = threading.Barrier(jobs)
    results: list[str | None] = []
    failures: list[BaseException] = []

    def create() -> None:
        start.wait()
        try:
            results.append(ensure_database(dsn))
        except BaseException as exc:  # reported by the caller, with the others
            failures.append(exc)

    threads = [threading.Thread(target=create) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, failures


def test_jobs_creating_the_same_database_at_once_all_go_on(
    fresh_name: Callable[[], str],
) -> None:
    # One of two datagen runs lost with exit 3: duplicate key value violates unique
    # constraint "pg_database_datname_index" (the other's creation had not committed).
    for _ in range(3):
        name = fresh_name()
        results, failures = _all_at_once(f"{ADMIN_DSN} dbname={name}", 6)
        assert failures == []
        assert results.count(name) == 1 and results.count(None) == 5
        assert _exists(name)


def test_a_database_another_job_uses_is_left_to_it(
    fresh_name: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    # The run that created it failed and dropped it WITH (FORCE): the other job's session
    # died with "server closed the connection unexpectedly".
    name = fresh_name()
    dsn = f"{ADMIN_DSN} dbname={name}"
    assert ensure_database(dsn) == name
    with psycopg.connect(dsn, autocommit=True) as other_job:
        other_job.execute("CREATE TABLE work (x int)")
        with caplog.at_level(logging.WARNING, logger="backend_checks.db"):
            drop_database(dsn)
        other_job.execute("INSERT INTO work VALUES (1)")
        assert other_job.execute("SELECT count(*) FROM work").fetchone() == (1,)
    assert _exists(name)
    assert any(name in record.getMessage() for record in caplog.records)


def test_a_database_nobody_uses_is_dropped(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    dsn = f"{ADMIN_DSN} dbname={name}"
    assert ensure_database(dsn) == name
    with psycopg.connect(dsn) as conn:  # the failed run's own session, closed before
        conn.execute("SELECT 1")
    drop_database(dsn)
    assert not _exists(name)
