"""Locust's master/worker mode with several workers, on loopback, against a real PostgreSQL.

Each run is a real ``locust --master`` and real ``--worker`` processes (Locust patches
gevent on import: it never runs in the test process); the master's merged result is
imported and judged as ``devicelab backend load --import`` does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from backend_checks.load import LoadOptions, load_checks
from backend_checks.load.imported import import_results
from backend_checks.load.models import WorkerResult
from backend_checks.load.runner import write_spec
from devicelab.models import Target, TargetBook

pytestmark = pytest.mark.timeout(120)

_ROOT = Path(__file__).resolve().parents[2]
_LOCUST = [sys.executable, "-m", "locust", "-f", "backend_checks/load/locustfile.py"]


@pytest.fixture(scope="module")
def dsn(load_cluster: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A scratch database with a small data set on a cluster of our own."""
    with load_cluster("loaddist") as url:
        yield url


def _run(
    spec: Path,
    out: Path,
    *,
    workers: int,
    users: int,
    spawn_rate: float,
    run_time: str,
    kill_one_after_s: float | None = None,
) -> WorkerResult:
    """A master and ``workers`` workers on loopback; the master's merged result."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "DEVICELAB_LOAD_SPEC": str(spec), "DEVICELAB_LOAD_OUT": str(out)}
    log = out.with_suffix(".master.log")
    with log.open("w") as sink:
        master = subprocess.Popen(
            [*_LOCUST, "--master", "--headless", "--master-bind-host", "127.0.0.1",
             "--master-bind-port", port, "--expect-workers", str(workers), "-u", str(users),
             "-r", str(spawn_rate), "-t", run_time, "--only-summary"],
            cwd=_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
    procs = [
        subprocess.Popen(
            [*_LOCUST, "--worker", "--master-host", "127.0.0.1", "--master-port", port],
            cwd=_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        if kill_one_after_s is not None:
            # From the start of the users, not of the processes: on a busy machine a worker
            # killed before it joined left the master waiting for it (--expect-workers).
            deadline = time.monotonic() + 60
            while "All users spawned" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(kill_one_after_s)
            procs[-1].kill()
        master.wait(timeout=90)
        for proc in procs:
            proc.wait(timeout=30)
    finally:
        for proc in (master, *procs):
            if proc.poll() is None:
                proc.kill()
    return WorkerResult.model_validate_json(out.read_text())


def test_workers_are_different_users_judged_from_their_own_start(dsn: str, tmp_path: Path) -> None:
    """Two workers: each runs its own users (not the same ones twice, in lockstep); a
    user spawned late in the ramp carries no latency for it; a master's -t shorter than
    the spec's window is judged on the time the users actually ran."""
    import psycopg

    options = LoadOptions(mix="full", allow_writes=True, per_user_rate=5, duration_s=10)
    spec = write_spec(dsn, options, 8, tmp_path / "spec.json")
    with psycopg.connect(dsn, autocommit=True) as conn:
        since = conn.execute("SELECT clock_timestamp()").fetchone()
    # -r 2: the last users start ~3 s after the first.
    merged = _run(spec, tmp_path / "merged.json", workers=2, users=8, spawn_rate=2,
                  run_time="8s")  # fmt: skip
    assert merged.shape is not None and merged.shape.workers == 2
    assert not merged.shape.lost_workers
    assert merged.connected == 8 and merged.peak_connected == 8

    with psycopg.connect(dsn, autocommit=True) as conn:
        twice = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM messages WHERE created_at >= %s"
            " GROUP BY sender_id, content HAVING count(*) > 1) d",
            since,
        ).fetchone()
        senders = conn.execute(
            "SELECT count(DISTINCT sender_id) FROM messages WHERE created_at >= %s", since
        ).fetchone()
    assert twice is not None and twice[0] == 0  # no message sent by two workers
    assert senders is not None and senders[0] >= 5  # more than one worker's 4 identities

    # The window the users were in: -t 8 s less the ramp, not the spec's 10 s.
    assert merged.shape.spec_duration_s == 10
    assert 4.0 <= merged.shape.duration_s <= 8.0
    (step,) = import_results([tmp_path / "merged.json"]).steps
    # 8 users x 5 ops/s, judged on the time they ran.
    assert step.total.throughput_per_s >= 0.8 * 40, step.total
    # An idle server: tens of milliseconds, not the ramp's seconds.
    assert step.total.p95_ms < 250, step.total


def test_a_worker_lost_mid_run_is_named_and_the_step_does_not_pass(
    dsn: str, tmp_path: Path
) -> None:
    spec = write_spec(dsn, LoadOptions(mix="read", per_user_rate=2, duration_s=8), 6,
                      tmp_path / "spec.json")  # fmt: skip
    merged = _run(spec, tmp_path / "merged.json", workers=2, users=6, spawn_rate=50,
                  run_time="7s", kill_one_after_s=2.5)  # fmt: skip
    assert merged.shape is not None and len(merged.shape.lost_workers) == 1

    run = import_results([tmp_path / "merged.json"])
    assert run.steps[0].lost_workers == merged.shape.lost_workers
    book = TargetBook(
        targets=[Target(check="load_100", platform="backend", op=">=", value=6, unit="users",
                        stat="value", source="test: 6 users")]
    )  # fmt: skip
    checks, _ = load_checks(run, book)
    check = next(c for c in checks if c.id == "load_100")
    assert check.status == "fail" and "no load process lost" in check.reason
