"""Hints and help a new user follows literally: each names a command or value that works
from where it is printed (real PostgreSQL, ``python -m devicelab`` subprocesses)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.backend_checks.cli_run import cli, one_line


def test_check_on_foreign_rows_hints_a_command_that_exists(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    # `backend check` has no --force: the hint said "or --force", a flag check refuses.
    dsn = make_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE mine (x int); INSERT INTO mine VALUES (1)")
    proc = cli("backend", "check", "--dsn", dsn, "--out", str(tmp_path), "--allow-writes")
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    assert "public.mine" in line
    assert "devicelab backend datagen --dsn DSN --allow-writes --force" in line
