"""A run stopped while it first creates the managed cluster (SIGTERM, SIGKILL) leaves
nothing that later runs refuse; a data folder that is not ours to rebuild stays (real
initdb, temp state dirs)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from backend_checks.managed import ManagedPostgres, find_bindir
from devicelab.errors import BackendUnavailable, ToolMissing


def _processes_of(state: Path) -> dict[int, list[str]]:
    """The live processes whose command line names ``state`` (ours: its name is unique)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if any(str(state) in arg for arg in argv):  # a zombie's cmdline is empty
                found[int(entry.name)] = argv
    return found


def _initdbs(state: Path) -> list[int]:
    return [pid for pid, argv in _processes_of(state).items() if argv[0].endswith("/initdb")]


@pytest.fixture
def state() -> Iterator[Path]:
    try:
        find_bindir()
    except ToolMissing:
        pytest.skip("no PostgreSQL server binaries")
    # Not pytest's tmp_path: as root the postgres user must traverse every parent folder.
    path = Path(tempfile.mkdtemp(prefix="dl-interrupted-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):
            ManagedPostgres(path).stop()
        # An initdb orphaned by a test (SIGKILL) is ours: let it end before its folder goes.
        deadline = time.monotonic() + 30
        while (left := _processes_of(path)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)


def _start_then_signal(state: Path, code: str, signum: int) -> subprocess.Popen[bytes]:
    """Run ``code`` (which creates the cluster in ``state``) in a child Python and send it
    ``signum`` as soon as its initdb runs; returns the child, ended."""
    env = {**os.environ, "DEVICELAB_STATE": str(state)}
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not _initdbs(state):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "initdb never started"
            time.sleep(0.01)
        child.send_signal(signum)
        child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child


def _works(cluster: ManagedPostgres) -> None:
    with psycopg.connect(cluster.ensure()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert cluster.port() > 0


def test_sigterm_during_first_creation_leaves_a_cluster_the_next_run_creates(
    state: Path,
) -> None:
    # It exited 143, its initdb ran on and made a data folder without our settings: every
    # later command said "has no port setting", exit 3.
    code = (
        "from devicelab.cli import main; "
        "main(['backend', 'datagen', '--messages', '1000', '--allow-writes'])"
    )
    child = _start_then_signal(state, code, signal.SIGTERM)
    assert child.returncode == 143
    deadline = time.monotonic() + 0.3
    while _initdbs(state) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _initdbs(state) == []  # killed with the run, not left to finish alone
    cluster = ManagedPostgres(state)
    _works(cluster)
    assert [p.name for p in cluster.base.iterdir() if p.name.startswith("data")] == ["data"]


def test_a_run_killed_outright_during_creation_does_not_poison_the_next(state: Path) -> None:
    # SIGKILL: nothing of ours runs; the orphaned initdb may still be writing its folder
    # while the next run creates the cluster.
    code = (
        "from pathlib import Path; from backend_checks.managed import ManagedPostgres; "
        f"ManagedPostgres(Path({str(state)!r})).ensure()"
    )
    child = _start_then_signal(state, code, signal.SIGKILL)
    assert child.returncode == -signal.SIGKILL
    cluster = ManagedPostgres(state)
    _works(cluster)
    cluster.stop()
    _works(ManagedPostgres(state))  # reused: the orphan's leftovers do not matter either


def test_a_build_an_earlier_run_left_is_removed_not_used(state: Path) -> None:
    # What an orphaned initdb leaves when it finishes: a cluster without our settings.
    cluster = ManagedPostgres(state)
    stale = cluster.base / "data.new-1-0badc0de"
    stale.mkdir(parents=True)
    (stale / "PG_VERSION").write_text(f"{cluster.major}\n")
    (stale / "postgresql.conf").write_text("# initdb's, without ours\n")
    _works(cluster)
    assert [p.name for p in cluster.base.iterdir() if p.name.startswith("data")] == ["data"]


def test_an_old_cluster_without_our_settings_is_refused_not_deleted(state: Path) -> None:
    cluster = ManagedPostgres(state)
    cluster.ensure()
    cluster.stop()
    conf = cluster.data / "postgresql.conf"
    conf.write_text(conf.read_text().split("# --- devicelab managed settings ---")[0])
    with pytest.raises(BackendUnavailable, match="has no port setting") as caught:
        ManagedPostgres(state).ensure()
    assert f"remove {cluster.base}" in caught.value.one_line()
    assert (cluster.data / "PG_VERSION").exists()  # a user's data: never removed for them


def test_a_data_folder_that_is_no_cluster_is_left_alone(state: Path) -> None:
    cluster = ManagedPostgres(state)
    cluster.data.mkdir(parents=True)
    (cluster.data / "notes.txt").write_text("mine")
    with pytest.raises(BackendUnavailable):
        cluster.ensure()
    assert (cluster.data / "notes.txt").read_text() == "mine"
