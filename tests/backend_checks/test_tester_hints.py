"""Hints and help a new user follows literally: each names a command or value that works
from where it is printed (real PostgreSQL, ``python -m devicelab`` subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``devicelab ARGS`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "devicelab", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line of ``proc``'s stderr (asserted: no traceback, nothing else)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("devicelab: error:"), proc.stderr
    return lines[0]


def test_check_on_foreign_rows_hints_a_command_that_exists(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    # `backend check` has no --force: the hint said "or --force", a flag check refuses.
    dsn = make_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE mine (x int); INSERT INTO mine VALUES (1)")
    proc = _cli("backend", "check", "--dsn", dsn, "--out", str(tmp_path), "--allow-writes")
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert "public.mine" in line
    assert "devicelab backend datagen --dsn DSN --allow-writes --force" in line
