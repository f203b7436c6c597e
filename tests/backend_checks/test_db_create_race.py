"""Jobs that share a server: creating a missing database at the same time as another job,
and dropping one we created while another job has started on it (real PostgreSQL)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from backend_checks import db
from backend_checks.db import drop_database, ensure_database
from tests.backend_checks.conftest import admin, database_exists, dsn_of


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
            with admin() as other:
                other.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        return self.conn.execute(query, params)


def test_a_database_created_between_look_and_create_counts_as_there(
    fresh_db_name: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It failed: "database ... does not exist and cannot be created: ... already exists".
    name = fresh_db_name()
    real = db._maintenance

    def racing(dsn: str) -> _CreatedBetween:
        conn = real(dsn)
        assert conn is not None
        return _CreatedBetween(conn, name)

    monkeypatch.setattr(db, "_maintenance", racing)
    assert ensure_database(dsn_of(name)) is None  # not ours: never dropped
    assert database_exists(name)


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
    fresh_db_name: Callable[[], str],
) -> None:
    # One of two datagen runs lost with exit 3: duplicate key value violates unique
    # constraint "pg_database_datname_index" (the other's creation had not committed).
    for _ in range(3):
        name = fresh_db_name()
        results, failures = _all_at_once(dsn_of(name), 6)
        assert failures == []
        assert results.count(name) == 1 and results.count(None) == 5
        assert database_exists(name)


def test_a_database_another_job_uses_is_left_to_it(
    fresh_db_name: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    # The run that created it failed and dropped it WITH (FORCE): the other job's session
    # died with "server closed the connection unexpectedly".
    name = fresh_db_name()
    dsn = dsn_of(name)
    assert ensure_database(dsn) == name
    with psycopg.connect(dsn, autocommit=True) as other_job:
        other_job.execute("CREATE TABLE work (x int)")
        with caplog.at_level(logging.WARNING, logger="backend_checks.db"):
            drop_database(dsn)
        other_job.execute("INSERT INTO work VALUES (1)")
        assert other_job.execute("SELECT count(*) FROM work").fetchone() == (1,)
    assert database_exists(name)
    assert any(name in record.getMessage() for record in caplog.records)


def test_a_database_nobody_uses_is_dropped(fresh_db_name: Callable[[], str]) -> None:
    name = fresh_db_name()
    dsn = dsn_of(name)
    assert ensure_database(dsn) == name
    with psycopg.connect(dsn) as conn:  # the failed run's own session, closed before
        conn.execute("SELECT 1")
    drop_database(dsn)
    assert not database_exists(name)
