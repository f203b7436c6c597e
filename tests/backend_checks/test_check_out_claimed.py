"""``backend check --out`` holds its folder as a run does: a run or another check
writing there is refused (exit 2) before the check connects, and a folder that did not
exist is made and held only once there are results to write."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devicelab.cli.backend import _claimed
from devicelab.errors import BadInput
from devicelab.records import LOCK_FILE
from tests.backend_checks.cli_run import cli, one_line
from tests.out_holder import hold_out

#: Nothing listens on port 1: a check that got as far as connecting fails with exit 3.
NOWHERE = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=5"


def test_a_folder_another_run_writes_in_is_refused_before_connecting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"theirs": true}\n')
    holder = hold_out(out)
    try:
        began = time.monotonic()
        proc = cli("backend", "check", "--dsn", NOWHERE, "--out", str(out))
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr
    assert f"another devicelab run is writing there (pid {holder.pid})" in one_line(proc)
    assert time.monotonic() - began < 30
    assert (out / "results.json").read_text() == '{"theirs": true}\n'


def test_a_new_folder_is_made_only_to_write_and_held_while_written(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    with _claimed(out) as claim_to_write:
        assert not out.parent.exists(), "made before the check had results"
        with claim_to_write():
            assert (out / LOCK_FILE).exists()
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_new_folder_another_run_took_meanwhile_is_refused_at_the_write(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    with _claimed(out) as claim_to_write:
        out.mkdir()  # a run started on it while the check ran
        holder = hold_out(out)
        try:
            with pytest.raises(BadInput, match=rf"\(pid {holder.pid}\)"), claim_to_write():
                pytest.fail("wrote beside the other run")
        finally:
            holder.kill()
            holder.wait()
