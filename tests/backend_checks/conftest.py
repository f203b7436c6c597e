"""Shared fixtures of the backend_checks tests: real PostgreSQL, scratch databases.

Databases are uniquely named ones on the local server (127.0.0.1:5432 as postgres, or
$DEVICELAB_TEST_PG as a libpq DSN of a server where we may create databases), dropped at
the end; their names start with $DEVICELAB_TEST_DB_PREFIX (``dl_test_``: a shared server
may allow another). Tests skip with a reason when no server answers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backend_checks.datagen import DatagenParams, generate

ADMIN_DSN = os.environ.get("DEVICELAB_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")
DB_PREFIX = os.environ.get("DEVICELAB_TEST_DB_PREFIX", "dl_test_")
#: The small data set most tests share: big enough that a sequential scan of messages is
#: flagged (>= 1,000 rows) and a conversation holds thousands of messages.
SMALL = DatagenParams(messages=20_000, users=200, conversations=1_000, seed=7)


def admin() -> psycopg.Connection[Any]:
    """An autocommit connection to the server's ``postgres`` database."""
    return psycopg.connect(f"{ADMIN_DSN} dbname=postgres", autocommit=True, connect_timeout=3)


def dsn_of(name: str) -> str:
    """The DSN of database ``name`` on the test server."""
    return f"{ADMIN_DSN} dbname={name}"


@pytest.fixture(scope="session")
def pg_server() -> None:
    """Skip when no PostgreSQL answers at ADMIN_DSN."""
    try:
        with admin():
            pass
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN_DSN!r}: {exc}".splitlines()[0])


@pytest.fixture(scope="session")
def make_db(pg_server: None) -> Iterator[Callable[[], str]]:
    """A factory of empty scratch databases; returns each one's DSN. All are dropped."""
    made: list[str] = []

    def create() -> str:
        name = f"{DB_PREFIX}{uuid.uuid4().hex[:10]}"
        with admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        made.append(name)
        return dsn_of(name)

    yield create
    with admin() as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def fresh_db_name(pg_server: None) -> Iterator[Callable[[], str]]:
    """A factory of names of databases that do not exist (yet: for the code under test to
    create); whatever of them exists at the end is dropped."""
    names: list[str] = []

    def make() -> str:
        names.append(f"{DB_PREFIX}{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield make
    with admin() as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def db_prefix() -> str:
    """What the names of the databases (and roles) tests make start with."""
    return DB_PREFIX


def database_exists(name: str) -> bool:
    """Whether the test server holds a database ``name``."""
    with admin() as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


@pytest.fixture(scope="session")
def exists_db() -> Callable[[str], bool]:
    """The :func:`database_exists` helper, as a fixture."""
    return database_exists


@pytest.fixture
def empty_db(make_db: Callable[[], str]) -> str:
    """A fresh empty scratch database (its DSN)."""
    return make_db()


def generated(make_db: Callable[[], str], params: DatagenParams = SMALL) -> str:
    """A scratch database filled by the generator; returns its DSN."""
    dsn = make_db()
    with psycopg.connect(dsn) as conn:
        generate(conn, params, allow_writes=True)
    return dsn


@pytest.fixture(scope="session")
def healthy_db(make_db: Callable[[], str]) -> str:
    """One generated database shared by the read-only tests (do not change it)."""
    return generated(make_db)


def tables_of(dsn: str) -> list[str]:
    """The user tables of a database (schema.table), sorted."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """SELECT schemaname || '.' || tablename FROM pg_tables
               WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"""
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture(scope="session")
def list_tables() -> Callable[[str], list[str]]:
    """The :func:`tables_of` helper, as a fixture (test modules do not import conftest)."""
    return tables_of


@pytest.fixture(scope="session")
def generate_db(make_db: Callable[[], str]) -> Callable[[DatagenParams], str]:
    """A factory: a new scratch database filled by the generator with the given params."""
    return lambda params=SMALL: generated(make_db, params)


@pytest.fixture(scope="session")
def small_params() -> DatagenParams:
    """The shared small data set's parameters."""
    return SMALL


@contextlib.contextmanager
def _load_cluster(name: str) -> Iterator[str]:
    """A cluster of our own (load tests measure its CPU and need pg_stat_statements
    preloaded) with a small data set in database ``name``; stopped and removed after."""
    if shutil.which("initdb") is None and not list(
        Path("/usr/lib/postgresql").glob("*/bin/initdb")
    ):
        pytest.skip("PostgreSQL server binaries are not installed")
    from backend_checks.managed import ManagedPostgres

    state = Path(tempfile.mkdtemp(prefix=f"devicelab-{name}-", dir="/tmp"))
    state.chmod(0o755)  # the postgres user must traverse it when we are root
    cluster = ManagedPostgres(state_dir=state)
    try:
        url = cluster.ensure(name)
        with psycopg.connect(url) as conn:
            generate(
                conn,
                DatagenParams(messages=5_000, users=120, conversations=400),
                allow_writes=True,
            )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield url
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def load_cluster() -> Callable[[str], contextlib.AbstractContextManager[str]]:
    """The :func:`_load_cluster` factory, as a fixture."""
    return _load_cluster
