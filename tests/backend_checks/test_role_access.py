"""The server-side commands as roles that are not superusers: what they are told."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backend_checks.check import CheckOptions, run_check
from backend_checks.datagen import DatagenParams, foreign_data, generate
from backend_checks.load import LoadOptions, run_load
from backend_checks.unused import unused_indexes
from devicelab.errors import BadInput

TINY = DatagenParams(messages=2_000, users=50, conversations=100, seed=5)


def _admin(dsn: str) -> psycopg.Connection[Any]:
    """An autocommit connection to the ``postgres`` database of ``dsn``'s server."""
    return psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True)


@pytest.fixture
def roles(make_db: Callable[[], str]) -> Iterator[Callable[[str], str]]:
    """A factory of LOGIN roles ``dl_t_<hex>`` with the given attributes; returns each
    one's name. Dropped at the end, with the databases they own."""
    server = make_db()
    made: list[str] = []

    def create(attributes: str) -> str:
        name = f"dl_t_{uuid.uuid4().hex[:8]}"
        with _admin(server) as conn:
            conn.execute(f"CREATE ROLE {name} LOGIN {attributes}")  # type: ignore[arg-type]
        made.append(name)
        return name

    yield create
    with _admin(server) as conn:
        owned = conn.execute(
            "SELECT datname FROM pg_database WHERE datdba::regrole::text = ANY(%s)", (made,)
        ).fetchall()
        for (name,) in owned:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        for name in made:
            conn.execute(f"DROP ROLE IF EXISTS {name}")  # type: ignore[arg-type]


def _as(dsn: str, role: str) -> str:
    return f"{dsn} user={role}"


def test_a_role_that_sees_the_tables_through_rls_is_told_so_not_to_seed(
    generate_db: Callable[[DatagenParams], str], roles: Callable[[str], str]
) -> None:
    # It saw "no messages" in a database of 2,000 and was told to add --allow-writes,
    # which then tried to generate data over them.
    dsn = generate_db(TINY)
    reader = roles("IN ROLE pg_read_all_data, authenticated")
    with pytest.raises(BadInput) as caught:
        run_check(_as(dsn, reader), CheckOptions(runs=1, allow_writes=True))
    assert "row-level security" in caught.value.message
    assert f"ALTER ROLE {reader} BYPASSRLS" in (caught.value.hint or "")


def test_a_role_that_may_not_become_the_app_is_told_the_grant_before_anything_runs(
    generate_db: Callable[[DatagenParams], str], roles: Callable[[str], str]
) -> None:
    # Every query failed alone, seq_scans passed on no plan and index_usage failed on
    # problems it had not judged; a load measured a minute of refusals.
    dsn = generate_db(TINY)
    reader = roles("BYPASSRLS IN ROLE pg_read_all_data")
    with pytest.raises(BadInput) as caught:
        run_check(_as(dsn, reader), CheckOptions(runs=1))
    assert f"GRANT authenticated TO {reader}" in (caught.value.hint or "")
    with pytest.raises(BadInput) as caught:
        run_load(_as(dsn, reader), LoadOptions(users=[5], duration_s=5, mix="read"))
    assert f"GRANT authenticated TO {reader}" in (caught.value.hint or "")


def test_datagen_refused_a_privilege_is_bad_input_with_what_it_needs(
    make_db: Callable[[], str], roles: Callable[[str], str]
) -> None:
    dsn = make_db()  # owned by postgres: the role may connect, not create in public
    writer = roles("")
    with psycopg.connect(_as(dsn, writer)) as conn, pytest.raises(BadInput) as caught:
        generate(conn, TINY, allow_writes=True)
    assert "permission denied" in caught.value.message
    assert "Without superuser" in (caught.value.hint or "")


def test_rows_hidden_from_the_owner_by_forced_rls_count_as_someone_elses(
    make_db: Callable[[], str], roles: Callable[[str], str]
) -> None:
    owner = roles("IN ROLE authenticated")
    dsn = make_db()
    dbname = conninfo_to_dict(dsn)["dbname"]
    with _admin(dsn) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" OWNER TO {owner}')  # type: ignore[arg-type]
    with psycopg.connect(_as(dsn, owner)) as conn:
        generate(conn, TINY, allow_writes=True)
    with psycopg.connect(_as(dsn, owner), autocommit=True) as conn:
        conn.execute("DELETE FROM public.devicelab_meta WHERE key = 'datagen'")  # not ours now
        assert "public.messages" in foreign_data(conn)
        conn.execute("ALTER TABLE public.messages FORCE ROW LEVEL SECURITY")
        assert conn.execute("SELECT count(*) FROM public.messages").fetchone() == (0,)
        found = foreign_data(conn)
    assert any(f.startswith("public.messages (its rows hidden") for f in found), found


def test_unused_indexes_are_not_called_unused_when_the_window_is_unknown(
    healthy_db: str,
) -> None:
    with psycopg.connect(healthy_db) as conn:
        conn.execute("CREATE INDEX dl_t_unscanned_idx ON public.messages (type)")
        try:
            check = unused_indexes(conn, window_start=None)
        finally:
            conn.rollback()
    assert check.status == "skip", check.reason
    assert "unknown" in (check.reason or "")
    assert any(c["index"].endswith("dl_t_unscanned_idx") for c in check.evidence["unused"])


def test_an_empty_table_under_rls_is_not_someone_else_s_data(
    make_db: Callable[[], str], roles: Callable[[str], str]
) -> None:
    # reltuples -1 ("never analyzed", every new table) read as "holds rows": datagen
    # refused a database whose RLS table was empty.
    dsn = make_db()
    reader = roles("")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.notes (id int)")
        conn.execute("ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY")
        conn.execute(f"GRANT SELECT ON public.notes TO {reader}")  # type: ignore[arg-type]
        try:
            with psycopg.connect(_as(dsn, reader)) as as_reader:
                assert foreign_data(as_reader) == []
        finally:  # the role is dropped before this database is
            conn.execute("DROP TABLE public.notes")


def test_a_missing_database_the_role_may_not_create_is_bad_input(
    make_db: Callable[[], str], roles: Callable[[str], str]
) -> None:
    # "permission denied to create database" (42501) exited 3, as if the server were down.
    from backend_checks.datagen import run_datagen

    server = make_db()
    writer = roles("")  # no CREATEDB
    missing = make_conninfo(server, dbname=f"dl_test_{uuid.uuid4().hex[:10]}", user=writer)
    with pytest.raises(BadInput) as caught:
        run_datagen(missing, TINY, allow_writes=True)
    assert "cannot be created: permission denied to create database" in caught.value.message
