"""The benches' command lines: bad input is one line and exit 2, checked before anything
starts (no cluster, no database, no browser); a missing uvloop is a usage error."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<name>.py args`` as a user would; returns the finished process."""
    return subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "DEVICELAB_TEST_PG": "host=127.0.0.1 port=1 user=nobody"},
    )


@pytest.mark.parametrize(
    ("name", "args", "says"),
    [
        ("shaping", ["--networks", "4gg"], "unknown network '4gg'"),
        ("shaping", ["--networks", ""], "argument --networks"),
        ("cli_startup", ["--runs", "0"], "argument --runs: must be at least 1"),
        ("datagen", ["--sizes", "abc"], "argument --sizes: not a whole number: 'abc'"),
        ("datagen", ["--dsn", "x"], "argument --dsn: not a PostgreSQL DSN"),
        ("datagen", ["--story", "0"], "argument --story: must be at least 1"),
        ("load", ["--rounds", "0"], "argument --rounds: must be at least 1"),
        ("load", ["--users", "0"], "argument --users: must be at least 1"),
        ("load", ["--duration", "0"], "argument --duration: must be at least 1"),
        ("load", ["--dsn", "host=x"], "add --allow-writes"),
        ("realtime", ["--sizes", "abc"], "argument --sizes: not a whole number"),
        ("realtime", ["--sizes", "0"], "argument --sizes: must be at least 1"),
        ("realtime", ["--rate", "0"], "argument --rate: must be a finite number above 0"),
        ("realtime", ["--users", "0"], "argument --users: must be at least 1"),
        ("realtime", ["--seconds", "0.01"], "makes no insert"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(name: str, args: list[str], says: str) -> None:
    done = bench(name, *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"bench/{name}.py: error: ")
    assert says in lines[0]
    assert "(hint: " in lines[0]
    assert not done.stdout  # nothing ran before the check


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is not None, reason="uvloop installed")
def test_realtime_loop_uvloop_without_uvloop_names_the_install() -> None:
    done = bench("realtime", "--loop", "uvloop")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "bench/realtime.py: error: --loop uvloop: uvloop is not installed "
        "(hint: `.venv/bin/pip install uvloop`, or pass --loop asyncio)"
    )


def test_datagen_connection_failure_is_exit_3() -> None:
    done = bench("datagen", "--dsn", "host=127.0.0.1 port=1 user=nobody", "--sizes", "10")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("bench/datagen.py: error: the database server: ")
