"""ReferenceServer.start() given up on, and storage roots left by a killed server.

Ctrl-C (or the start timeout) while start() waited left the server starting in its thread:
it came up and served on with its pool, change feed and storage root, and nothing could
stop it. Each test here starts a server over an empty database of its own, so the
connections left are counted in pg_stat_activity by database name.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg_pool
import pytest
from conftest import _admin, fresh_database

from backend_checks.reference import server as server_module
from backend_checks.reference.realtime import RealtimeService
from backend_checks.reference.server import ReferenceServer
from devicelab.errors import BackendUnavailable

#: Above any pid_max Linux allows (2**22): never a live process.
_DEAD_PID = 4_194_305
_OLD = time.time() - 3600


@pytest.fixture
def empty_db() -> Iterator[tuple[str, str]]:
    """The DSN and name of an empty database only this test uses, dropped afterwards."""
    with fresh_database("life") as made:
        yield made


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own temporary directory, where servers make their storage roots."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _connections(name: str) -> int:
    with _admin() as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND backend_type = 'client backend'",
            (name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def assert_nothing_left(empty_db: tuple[str, str], own_tmp: Path) -> Callable[[], None]:
    """A check that no server thread (of this test: a session's server may run),
    connection to the database or storage root is left."""
    before = set(threading.enumerate())

    def check() -> None:
        threads = set(threading.enumerate()) - before
        assert not [t for t in threads if t.name == "devicelab-reference"]
        name = empty_db[1]
        deadline = time.monotonic() + 10  # a closed connection's backend exits soon after
        while _connections(name) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _connections(name) == 0
        assert not list(own_tmp.glob("devicelab-storage-*"))

    return check


def _interrupt_main_when(event: threading.Event) -> threading.Thread:
    """Send SIGINT to the main thread (Ctrl-C) once ``event`` is set."""

    main = threading.main_thread().ident
    assert main is not None

    def interrupt() -> None:
        if event.wait(60):
            signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    return thread


def _stall_realtime_start(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make startup stop at its last step, the pool and the change feed open; returns the
    event set once it got there."""
    reached = threading.Event()
    original = RealtimeService.start

    async def stalled(self: RealtimeService, app: Any) -> None:
        await original(self, app)
        reached.set()
        await asyncio.sleep(60)

    monkeypatch.setattr(RealtimeService, "start", stalled)
    return reached


def test_ctrl_c_while_it_starts_stops_it_and_leaves_nothing(
    empty_db: tuple[str, str],
    assert_nothing_left: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn, _ = empty_db
    reached = _stall_realtime_start(monkeypatch)
    interrupter = _interrupt_main_when(reached)
    with pytest.raises(KeyboardInterrupt):
        ReferenceServer(dsn).start()
    interrupter.join()
    assert_nothing_left()


def test_ctrl_c_as_it_came_up_stops_it(
    empty_db: tuple[str, str],
    assert_nothing_left: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn, _ = empty_db

    class InterruptedEvent(threading.Event):
        """The wait returns (the server is ready), then Ctrl-C comes."""

        def wait(self, timeout: float | None = None) -> bool:
            super().wait(timeout)
            raise KeyboardInterrupt

    fake = types.SimpleNamespace(Thread=threading.Thread, Event=InterruptedEvent)
    monkeypatch.setattr(server_module, "threading", fake)
    server = ReferenceServer(dsn)
    with pytest.raises(KeyboardInterrupt):
        server.start()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/health", timeout=2)
    assert_nothing_left()


def test_the_start_timeout_stops_it_and_leaves_nothing(
    empty_db: tuple[str, str],
    assert_nothing_left: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn, _ = empty_db
    _stall_realtime_start(monkeypatch)
    monkeypatch.setattr(server_module, "_START_TIMEOUT_S", 3.0)
    with pytest.raises(BackendUnavailable, match="did not start in 3 s"):
        ReferenceServer(dsn).start()
    assert_nothing_left()


def test_ctrl_c_while_the_pool_opens_closes_the_pool(
    empty_db: tuple[str, str],
    assert_nothing_left: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Cancelled inside open_pool, the pool was dropped unclosed: its tasks were destroyed
    # pending with the loop, and asyncio said so, once per task, on stderr.
    dsn, _ = empty_db
    reached = threading.Event()
    original = psycopg_pool.AsyncConnectionPool.wait

    async def slow_wait(self: psycopg_pool.AsyncConnectionPool, timeout: float = 30) -> None:
        await original(self, timeout)
        reached.set()
        await asyncio.sleep(2)

    monkeypatch.setattr(psycopg_pool.AsyncConnectionPool, "wait", slow_wait)
    interrupter = _interrupt_main_when(reached)
    with pytest.raises(KeyboardInterrupt):
        ReferenceServer(dsn).start()
    interrupter.join()
    gc.collect()
    assert "Task was destroyed" not in caplog.text
    assert_nothing_left()


def test_a_startup_failing_after_the_pool_opened_closes_the_pool(
    empty_db: tuple[str, str],
    assert_nothing_left: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiohttp runs no cleanup hook after a failed startup: the pool stayed open.
    dsn, _ = empty_db

    async def failing(self: RealtimeService, app: Any) -> None:
        raise RuntimeError("the change feed broke")

    monkeypatch.setattr(RealtimeService, "start", failing)
    with pytest.raises(BackendUnavailable, match="could not start"):
        ReferenceServer(dsn).start()
    assert_nothing_left()


_KILLED_CHILD = """
import sys, time
from backend_checks.reference.server import ReferenceServer
server = ReferenceServer(sys.argv[1]).start()
print(server.ctx.storage_root, flush=True)
time.sleep(600)
"""


def test_the_storage_root_of_a_killed_server_goes_at_the_next_start(
    empty_db: tuple[str, str], own_tmp: Path
) -> None:
    dsn, _ = empty_db
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, dsn],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(own_tmp)},
    )
    try:
        assert proc.stdout is not None
        left = Path(proc.stdout.readline().strip())
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert left.parent == own_tmp and left.is_dir()
    os.utime(left, (_OLD, _OLD))  # a minute old at least: younger ones are never swept
    server = ReferenceServer(dsn).start()
    try:
        assert not left.exists()
        assert server.ctx.storage_root.is_dir()
    finally:
        server.stop()


def test_the_sweep_leaves_what_is_not_provably_abandoned(
    empty_db: tuple[str, str], own_tmp: Path
) -> None:
    dsn, _ = empty_db
    stale = own_tmp / f"devicelab-storage-{_DEAD_PID}-stale123"
    kept = {
        own_tmp / "devicelab-storage-unstarted",
        own_tmp / "devicelab-storage-ab_cd123",  # an older root: no pid in its name
        own_tmp / f"devicelab-storage-{os.getpid()}-alive123",  # its pid runs
        own_tmp / f"devicelab-storage-{_DEAD_PID}-locked12",  # its lock is held
        own_tmp / f"devicelab-storage-{_DEAD_PID}-recent12",  # changed a moment ago
        own_tmp / f"devicelab-storage-{_DEAD_PID}-anyextra-1",  # not our name
    }
    for path in (stale, *kept):
        path.mkdir()
        (path / "bucket").mkdir()
        if not path.name.startswith(f"devicelab-storage-{_DEAD_PID}-recent"):
            os.utime(path, (_OLD, _OLD))
    target = own_tmp / "elsewhere"
    target.mkdir()
    link = own_tmp / f"devicelab-storage-{_DEAD_PID}-link1234"
    link.symlink_to(target, target_is_directory=True)
    file = own_tmp / f"devicelab-storage-{_DEAD_PID}-file1234"
    file.write_text("not a root")
    held = os.open(own_tmp / f"devicelab-storage-{_DEAD_PID}-locked12", os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        ReferenceServer(dsn).start().stop()
    finally:
        os.close(held)
    assert not stale.exists()
    for path in kept:
        assert (path / "bucket").is_dir(), path
    assert link.is_symlink() and target.is_dir()
    assert file.read_text() == "not a root"
