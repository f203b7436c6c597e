"""A run of many sockets gets the open files it needs, or one line saying how to."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVICELAB = Path(sys.executable).with_name("devicelab")


def _limited(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_towards_the_hard_one_and_past_it_is_an_error() -> None:
    code = (
        "import resource\n"
        "from devicelab.fdlimit import ensure_open_files\n"
        "from devicelab.errors import EnvironmentProblem\n"
        "print(ensure_open_files(300, 'x'), resource.getrlimit(resource.RLIMIT_NOFILE))\n"
        "try:\n"
        "    ensure_open_files(5000, '2,000 Realtime subscribers', fewer='fewer --subscribers')\n"
        "except EnvironmentProblem as exc:\n"
        "    print(exc.one_line())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        preexec_fn=lambda: _limited(128, 1024),
    )
    first, second = done.stdout.splitlines()
    assert first == "300 (300, 1024)"
    assert "2,000 Realtime subscribers need about 5,000 open files" in second
    assert "may open 1,024" in second and "ulimit -n 5000" in second
    assert "fewer --subscribers" in second


def test_a_realtime_run_too_big_for_the_limit_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    # Under `ulimit -n 1024` a check of 1,000 subscribers wrote 1.7 GB of asyncio's
    # "Too many open files" tracebacks and ran on for ten minutes.
    env = {**os.environ, "DEVICELAB_STATE": str(tmp_path / "state"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [str(DEVICELAB), "backend", "check", "--subscribers", "1000", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        preexec_fn=lambda: _limited(1024, 1024),
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "1,000 Realtime subscribers need about 2,256 open files" in done.stderr
    assert not (tmp_path / "state").exists()  # nothing was started


def test_a_check_whose_realtime_checks_are_skipped_needs_no_sockets(tmp_path: Path) -> None:
    # With --dsn and no Supabase project the realtime checks are skipped: refusing the
    # run for their sockets refused a check that opens none.
    env = {**os.environ, "DEVICELAB_STATE": str(tmp_path / "state"), "HOME": str(tmp_path)}
    dsn = "postgresql://postgres@127.0.0.1:5432/dl_test_no_such_database"
    done = subprocess.run(
        [str(DEVICELAB), "backend", "check", "--dsn", dsn, "--subscribers", "1000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        preexec_fn=lambda: _limited(1024, 1024),
    )
    assert "open files" not in done.stderr, done.stderr
    assert "dl_test_no_such_database" in done.stderr  # it went on to the database
