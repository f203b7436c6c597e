"""What libpq takes from the environment where the DSN is silent (PGHOST, PGPORT, PGUSER,
PGDATABASE) counts as if the DSN said it: ``run.backend.url`` of ``backend check`` names
the server and user libpq connected with (never a password), and ``backend datagen``
creates the database PGDATABASE names (real PostgreSQL)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from psycopg.conninfo import conninfo_to_dict

from backend_checks.check import CheckOptions, run_check
from backend_checks.datagen import DatagenParams, run_datagen

ADMIN_DSN = os.environ.get("DEVICELAB_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")


def test_a_dsn_of_only_a_dbname_is_written_with_the_server_and_user_libpq_used(
    healthy_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It was written postgresql:///<db>: no server, no user, though PGHOST named them.
    given = conninfo_to_dict(healthy_db)
    if not given.get("host") or given.get("password"):
        pytest.skip("the test server's DSN names no host, or holds a password")
    monkeypatch.setenv("PGHOST", str(given["host"]))
    monkeypatch.setenv("PGPORT", str(given.get("port") or 5432))
    monkeypatch.setenv("PGUSER", str(given.get("user") or "postgres"))
    results = run_check(f"dbname={given['dbname']}", CheckOptions(runs=3, only=["index_usage"]))
    backend = results.run.backend
    assert backend is not None and backend.kind == "postgres"
    host, port = given["host"], given.get("port") or 5432
    user = given.get("user") or "postgres"
    assert backend.url == f"postgresql://{user}@{host}:{port}/{given['dbname']}"


def test_datagen_creates_the_database_pgdatabase_names(
    fresh_db_name: Callable[[], str],
    exists_db: Callable[[str], bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It exited 3, "database ... does not exist": only the DSN's own dbname was created.
    if conninfo_to_dict(ADMIN_DSN).get("dbname"):
        pytest.skip("the test server's DSN names a database")
    name = fresh_db_name()
    monkeypatch.setenv("PGDATABASE", name)
    params = DatagenParams(messages=100, users=10, conversations=5)
    report = run_datagen(ADMIN_DSN, params, allow_writes=True)
    assert report.created_database == name and exists_db(name)
