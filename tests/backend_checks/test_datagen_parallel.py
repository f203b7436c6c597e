"""The data generator's parallel path against real PostgreSQL: the same rows and schema
as the serial path, staging never left behind, the swap keeping what is ours and refusing
to lose what is not, and its fallbacks to one transaction."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backend_checks import datagen_parallel
from backend_checks.datagen import STAGE_SCHEMA, LoadSql, foreign_data, generate
from backend_checks.datagen_tasks import Task
from devicelab.errors import BackendUnavailable, ToolMissing
from tests.backend_checks.datagen_state import TINY, catalog, fingerprint, has_staging


def test_parallel_and_serial_paths_give_the_same_rows_and_schema(
    make_db: Callable[[], str],
) -> None:
    serial, parallel, again = make_db(), make_db(), make_db()
    modes = []
    for dsn, flag in ((serial, False), (parallel, True), (again, True)):
        with psycopg.connect(dsn) as conn:
            modes.append(generate(conn, TINY, allow_writes=True, parallel=flag).mode)
    # A second parallel run over its own data swaps the tables again.
    with psycopg.connect(again) as conn:
        modes.append(generate(conn, TINY, allow_writes=True).mode)
    assert modes == ["serial", "parallel", "parallel", "parallel"]
    assert fingerprint(serial) == fingerprint(parallel) == fingerprint(again)
    catalogs = [catalog(dsn) for dsn in (serial, parallel, again)]
    assert set(catalogs[0]) ^ set(catalogs[1]) == set()
    assert set(catalogs[1]) ^ set(catalogs[2]) == set()
    assert catalogs[0] == catalogs[1] == catalogs[2]
    assert not has_staging(parallel) and not has_staging(again)


@pytest.mark.parametrize("unlogged", [False, True])
def test_both_ways_of_loading_the_messages_give_the_serial_rows(
    make_db: Callable[[], str], monkeypatch: pytest.MonkeyPatch, unlogged: bool
) -> None:
    # Where WAL is written anyway each connection inserts half of the messages; where a
    # table truncated in the loading transaction skips it (wal_level=minimal, forced here
    # on any server), one transaction inserts 40 % and copies the 60 % the other
    # connection computed into an unlogged table meanwhile.
    monkeypatch.setattr(datagen_parallel, "_skips_wal", lambda conn: unlogged)
    serial, parallel = make_db(), make_db()
    reports = []
    for dsn, flag in ((serial, False), (parallel, True)):
        with psycopg.connect(dsn) as conn:
            reports.append(generate(conn, TINY, allow_writes=True, parallel=flag))
    assert [r.mode for r in reports] == ["serial", "parallel"]
    assert reports[0].counts == reports[1].counts
    assert {"task messages", "task messages, second part"} <= set(reports[1].phases)
    assert fingerprint(serial) == fingerprint(parallel)
    assert catalog(serial) == catalog(parallel)
    assert not has_staging(parallel)


def test_parallel_failure_mid_way_keeps_the_old_data_and_no_staging(
    make_db: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = make_db()
    with psycopg.connect(dsn) as conn:
        generate(conn, TINY, allow_writes=True)
    before = fingerprint(dsn), catalog(dsn)

    def broken(self: LoadSql) -> tuple[str, dict[str, Any]]:
        # Fails at run time (a database error, not a statement that does not fit).
        return (
            "INSERT INTO devicelab_stage.message_read_receipts (message_id, user_id)"
            " SELECT id, sender_id FROM devicelab_stage.messages WHERE 1 / 0 = 1",
            {},
        )

    monkeypatch.setattr(LoadSql, "receipts", broken)
    with psycopg.connect(dsn) as conn, pytest.raises(BackendUnavailable) as caught:
        generate(conn, TINY.model_copy(update={"seed": 9}), allow_writes=True)
    assert "rolled back" in caught.value.message
    assert (fingerprint(dsn), catalog(dsn)) == before
    assert not has_staging(dsn)


def test_parallel_failure_on_an_empty_database_leaves_nothing(
    empty_db: str, list_tables: Callable[[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: LoadSql) -> tuple[str, dict[str, Any]]:
        return "SELECT 1 / 0", {}

    monkeypatch.setattr(LoadSql, "conversations", broken)
    with psycopg.connect(empty_db) as conn, pytest.raises(BackendUnavailable):
        generate(conn, TINY, allow_writes=True, parallel=True)
    assert list_tables(empty_db) == []
    assert not has_staging(empty_db)


def test_staging_left_by_a_killed_run_is_not_foreign_and_is_dropped(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn:
        conn.execute(f"CREATE SCHEMA {STAGE_SCHEMA}")
        conn.execute(f"CREATE TABLE {STAGE_SCHEMA}.messages (id int)")
        conn.execute(f"INSERT INTO {STAGE_SCHEMA}.messages VALUES (1)")
        conn.commit()
        assert foreign_data(conn) == []
    for parallel in (False, True):
        with psycopg.connect(empty_db) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGE_SCHEMA}")
            conn.commit()
            generate(conn, TINY, allow_writes=True, parallel=parallel)
        assert not has_staging(empty_db)


def test_falls_back_to_one_transaction_inside_the_callers_transaction(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn:
        conn.execute("SELECT 1")  # a transaction is open: the parallel path would commit it
        report = generate(conn, TINY, allow_writes=True)
        conn.commit()
    assert report.mode == "serial"
    assert report.counts["messages"] == TINY.messages


def test_falls_back_to_one_transaction_when_the_swap_would_lose_something(
    make_db: Callable[[], str],
) -> None:
    dsn = make_db()
    with psycopg.connect(dsn) as conn:
        generate(conn, TINY, allow_writes=True)
        # Someone else's view on our table: dropping the table would need CASCADE.
        conn.execute("CREATE VIEW public.recent AS SELECT id FROM public.messages")
        # ...and a publication of it (which DROP TABLE would silently forget).
        conn.execute("CREATE PUBLICATION dl_test_pub FOR TABLE public.conversations")
        conn.commit()
        report = generate(conn, TINY.model_copy(update={"seed": 5}), allow_writes=True)
        assert report.mode == "serial"
        conn.execute("DROP VIEW public.recent")
        conn.commit()
        report = generate(conn, TINY, allow_writes=True)
        assert report.mode == "serial", "the publication alone keeps the serial path"
        pub = conn.execute(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'dl_test_pub'"
        ).fetchone()
        assert pub == (1,)
        conn.execute("DROP PUBLICATION dl_test_pub")
        conn.commit()
    assert not has_staging(dsn)


def test_parallel_path_without_a_second_connection_runs_serial(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datagen_parallel, "_second_connection", lambda conn: None)
    with psycopg.connect(empty_db) as conn:
        report = generate(conn, TINY, allow_writes=True)
    assert report.mode == "serial"
    assert not has_staging(empty_db)


@pytest.fixture
def managed_dsns() -> Iterator[tuple[str, str]]:
    """A managed cluster in a temporary state dir: (unix socket DSN, TCP DSN with password)."""
    from backend_checks.managed import ManagedPostgres, find_bindir

    try:
        find_bindir()
    except ToolMissing:
        pytest.skip("no PostgreSQL server binaries")
    # Not pytest's tmp_path: as root the postgres user must traverse every parent folder.
    path = Path(tempfile.mkdtemp(prefix="dl-datagen-", dir="/tmp"))
    path.chmod(0o711)
    cluster = ManagedPostgres(path)
    try:
        socket_dsn = cluster.ensure()
        cluster.ensure("dl_tcp")
        yield socket_dsn, cluster.dsn("dl_tcp", tcp=True)
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(path, ignore_errors=True)


def test_parallel_path_on_the_managed_cluster_socket_and_tcp(
    managed_dsns: tuple[str, str],
) -> None:
    # The second connection reuses the first one's parameters, the password included.
    fingerprints = []
    for dsn in managed_dsns:
        with psycopg.connect(dsn) as conn:
            report = generate(conn, TINY, allow_writes=True)
        assert report.mode == "parallel"
        fingerprints.append(fingerprint(dsn))
        assert not has_staging(dsn)
    assert fingerprints[0] == fingerprints[1]


def test_staging_ddl_is_the_schemas_four_tables_outside_public() -> None:
    statements, external = datagen_parallel.staging_ddl()
    tables = [s.split()[2] for s in statements if s.startswith("CREATE TABLE")]
    assert tables == [
        f"{STAGE_SCHEMA}.profiles",
        f"{STAGE_SCHEMA}.conversations",
        f"{STAGE_SCHEMA}.messages",
        f"{STAGE_SCHEMA}.message_read_receipts",
    ]
    assert not any("public." in s or "auth." in s for s in statements)
    # The one reference outside public, added at the swap once the users exist.
    assert external == [
        ("profiles", "ADD FOREIGN KEY (id) REFERENCES auth.users (id) ON DELETE CASCADE")
    ]


def test_tasks_that_would_wait_for_each_other_never_run_together() -> None:
    def task(**locks: str) -> Any:
        return Task("t", lambda conn, wait: None, 1.0, locks=locks)

    index, other_index = task(messages="s"), task(messages="s")
    assert not index.conflicts(other_index)  # two CREATE INDEX share the table
    assert index.conflicts(task(messages="a"))  # CREATE INDEX and ANALYZE do not
    assert task(messages="a").conflicts(task(messages="a"))
    assert not task(messages="r", receipts="a").conflicts(task(messages="s"))
    assert task(messages="x").conflicts(task(messages="r"))
    assert not task(receipts="a").conflicts(task(messages="a"))


def test_the_swap_puts_back_the_reference_realtimes_capture_triggers(
    make_db: Callable[[], str],
) -> None:
    # The reference server leaves its capture trigger on the tables it watched (a server
    # started later reuses it). The swap once refused to lose it, so every run after a
    # `devicelab run` took the serial path, where the trigger fires per row (5x slower).
    dsn = make_db()
    capture = resources.files("backend_checks.reference").joinpath("sql/realtime.sql")
    with psycopg.connect(dsn) as conn:
        generate(conn, TINY, allow_writes=True)
        conn.execute(capture.read_text().encode())
        for table in ("messages", "conversations", "message_read_receipts"):
            conn.execute("SELECT devicelab_realtime.watch(%s::regclass)", (f"public.{table}",))
        conn.commit()
        triggers = [line for line in catalog(dsn) if line.startswith("trigger ")]
        assert len(triggers) == 5  # the schema's two on messages and the three
        report = generate(conn, TINY.model_copy(update={"seed": 5}), allow_writes=True)
        assert report.mode == "parallel"
        assert [line for line in catalog(dsn) if line.startswith("trigger ")] == triggers
        # ...and they capture: a listener hears a change made after the swap.
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute("LISTEN devicelab_realtime")
            # As a reference server does: the trigger notifies only while one is recorded.
            listener.execute("INSERT INTO devicelab_realtime.listeners VALUES (pg_backend_pid())")
            conn.execute(
                "UPDATE public.messages SET content = 'after the swap' WHERE id ="
                " (SELECT id FROM public.messages ORDER BY id LIMIT 1)"
            )
            conn.commit()
            heard = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
    assert [(h["table"], h["type"], h["record"]["content"]) for h in heard] == [
        ("messages", "UPDATE", "after the swap")
    ]
