"""The managed PostgreSQL cluster, for real: create, start, reuse, stop (temp state dir)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from backend_checks import managed
from backend_checks.managed import ManagedPostgres, find_bindir
from devicelab.errors import BadInput, ToolMissing


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: as root the postgres user must traverse every parent folder.
    path = Path(tempfile.mkdtemp(prefix="dl-managed-", dir="/tmp"))
    path.chmod(0o711)
    cluster = None
    try:
        yield path
    finally:
        try:
            cluster = ManagedPostgres(path)
            cluster.stop()
        except Exception:
            pass
        shutil.rmtree(path, ignore_errors=True)
        del cluster


def test_create_start_reuse_stop(state_dir: Path) -> None:
    try:
        find_bindir()
    except ToolMissing:
        pytest.skip("no PostgreSQL server binaries")
    cluster = ManagedPostgres(state_dir)
    assert not cluster.initialized() and not cluster.running()
    dsn = cluster.ensure()
    assert cluster.running()
    port = cluster.port()
    with psycopg.connect(dsn) as conn:
        libs = conn.execute("SHOW shared_preload_libraries").fetchone()
        assert libs and "pg_stat_statements" in libs[0] and "auto_explain" in libs[0]
        track = conn.execute("SHOW pg_stat_statements.track").fetchone()
        assert track == ("all",)
        listen = conn.execute("SHOW listen_addresses").fetchone()
        assert listen == ("127.0.0.1",)
        conn.execute("CREATE TABLE marker (x int)")
        conn.execute("INSERT INTO marker VALUES (42)")
    # TCP needs the stored password; the socket needs none.
    with psycopg.connect(cluster.dsn(tcp=True)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # Reused while running: same port, same data.
    assert cluster.ensure() == dsn
    assert cluster.stop() is True
    assert not cluster.running()
    assert cluster.stop() is False
    # Started again from the same data directory: no re-init, the marker is still there.
    again = ManagedPostgres(state_dir)
    dsn2 = again.ensure()
    assert again.port() == port
    with psycopg.connect(dsn2) as conn:
        assert conn.execute("SELECT x FROM marker").fetchone() == (42,)
    if os.geteuid() == 0:
        assert (state_dir / f"pg{again.major}" / "data").stat().st_uid != 0


def test_cli_stop_when_not_running(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from devicelab.cli import app

    monkeypatch.setenv("DEVICELAB_STATE", str(state_dir))
    result = CliRunner().invoke(app, ["backend", "stop"])
    assert result.exit_code == 0
    assert "not running" in result.output


def test_stop_where_no_cluster_was_made_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "never-used"
    monkeypatch.setenv("DEVICELAB_STATE", str(state))
    assert ManagedPostgres().stop() is False
    assert not state.exists()  # it made the folder and a pg15.lock in it


def test_a_pg_bindir_without_the_binaries_is_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It was ignored: the newest installed PostgreSQL was used instead, silently.
    monkeypatch.setenv("DEVICELAB_PG_BINDIR", str(tmp_path / "nowhere"))
    with pytest.raises(BadInput, match="no initdb and pg_ctl there") as caught:
        ManagedPostgres()
    assert caught.value.exit_code == 2


def test_no_postgresql_is_tool_missing_with_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEVICELAB_PG_BINDIR", raising=False)
    monkeypatch.setattr(managed.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(managed.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissing) as caught:
        ManagedPostgres()
    assert caught.value.exit_code == 3
    assert "apt-get install postgresql-15 postgresql-15-hypopg" in caught.value.one_line()


def test_a_port_taken_between_its_check_and_the_servers_bind_is_picked_again(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Free when checked, taken when PostgreSQL bound it: pg_ctl failed ("could not create
    # any TCP/IP sockets") and nothing picked another port.
    import socket

    try:
        find_bindir()
    except ToolMissing:
        pytest.skip("no PostgreSQL server binaries")
    cluster = ManagedPostgres(state_dir)
    cluster.ensure()
    conf = state_dir / f"pg{cluster.major}" / "data" / "postgresql.conf"
    mode, owner = conf.stat().st_mode, conf.stat().st_uid
    cluster.stop()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", cluster.port()))
        taken.listen()
        monkeypatch.setattr(managed, "_port_free", lambda port: True)  # the check's moment
        dsn = ManagedPostgres(state_dir).ensure()
        assert cluster.port() != taken.getsockname()[1]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # The settings were rewritten whole, as the file was (its mode and owner), in place.
    assert (conf.stat().st_mode, conf.stat().st_uid) == (mode, owner)
    assert [p.name for p in conf.parent.iterdir() if p.name.startswith(".postgresql")] == []
