"""The server going away in the middle of a datagen (real PostgreSQL; the datagen's own
session is ended by the server, as a crash or a restart ends it): the hint says what was
left behind and how to remove it, never "nothing was written"."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from backend_checks import datagen_parallel, db
from backend_checks.datagen import STAGE_SCHEMA, DatagenParams, run_datagen
from devicelab.errors import BackendUnavailable

ADMIN_DSN = os.environ.get("DEVICELAB_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")
PARAMS = DatagenParams(messages=100, users=10, conversations=5)


def _session_ended(conn: psycopg.Connection[Any], *_: Any, **__: Any) -> None:
    """Stands in for the parallel path: the server ends our session half-way."""
    conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")


def test_a_new_database_the_server_left_no_way_to_drop_is_named_with_the_fix(
    fresh_db_name: Callable[[], str],
    exists_db: Callable[[str], bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = fresh_db_name()
    monkeypatch.setattr(datagen_parallel, "generate", _session_ended)
    real = db._maintenance
    calls: list[str] = []

    def gone_after_create(dsn: str) -> Any:
        calls.append(dsn)
        return real(dsn) if len(calls) == 1 else None  # the drop finds no server

    monkeypatch.setattr(db, "_maintenance", gone_after_create)
    with pytest.raises(BackendUnavailable) as caught:
        run_datagen(f"{ADMIN_DSN} dbname={name}", PARAMS, allow_writes=True)
    assert exists_db(name)  # left, as the hint says (the fixture drops it)
    hint = caught.value.hint
    assert "nothing was written" not in hint
    assert f"database {name} was created for this run and left" in hint
    assert STAGE_SCHEMA in hint and f"dropdb {name}" in hint


def test_an_existing_database_may_keep_the_staging_schema_and_the_hint_says_so(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datagen_parallel, "generate", _session_ended)
    with pytest.raises(BackendUnavailable) as caught:
        run_datagen(empty_db, PARAMS, allow_writes=True)
    hint = caught.value.hint
    assert "nothing was written" not in hint
    assert f"DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE" in hint
