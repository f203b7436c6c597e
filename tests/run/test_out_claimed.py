"""One run writes in an --out folder at a time: a second one given the same folder is
refused (exit 2) before it starts anything, never left to interleave its results.json,
samples and reports with the first's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devicelab.errors import BadInput
from devicelab.lab import Lab
from devicelab.records import LOCK_FILE, claim_out
from tests.out_holder import hold_out
from tests.together import at_once


def test_a_folder_is_claimed_once_and_free_again_after(tmp_path: Path) -> None:
    with claim_out(tmp_path):
        refused = pytest.raises(BadInput, match="another devicelab run is writing there")
        with refused as held, claim_out(tmp_path):
            pass
        assert f"(pid {os.getpid()})" in held.value.one_line()
    assert not (tmp_path / LOCK_FILE).exists()  # an empty folder stays empty
    with claim_out(tmp_path):  # and the next run takes it
        assert (tmp_path / LOCK_FILE).exists()


def test_a_run_on_a_folder_another_process_writes_in_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    holder = hold_out(out)
    try:
        with pytest.raises(BadInput, match=rf"\(pid {holder.pid}\)"):
            Lab("web", "4g", scenarios=["battery_drain"]).run(out)
        assert not (out / "results.json").exists(), "it wrote beside the other run"
    finally:
        holder.kill()
        holder.wait()
    # The holder died without removing its file: its lock went with it.
    results = Lab("web", "4g", scenarios=["battery_drain"]).run(out)
    assert [c.status for c in results.checks] == ["skip"]
    assert not (out / LOCK_FILE).exists()


def test_the_cli_says_so_in_one_line_with_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    holder = hold_out(out)
    try:
        began = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "devicelab", "run", "--device", "web", "--network", "4g",
             "--out", str(out)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert run.returncode == 2, run.stderr
    assert f"another devicelab run is writing there (pid {holder.pid})" in run.stderr
    assert "Traceback" not in run.stderr
    assert time.monotonic() - began < 30, "it started the lab before refusing"
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the holder's, nothing of ours


def test_runs_checking_one_folder_at_once_never_fail_each_other(tmp_path: Path) -> None:
    # Both wrote and removed one probe name: one's unlink removed the other's probe
    # ("cannot write results there (No such file or directory)"), a wrong exit 2 where
    # the second run should have been told the first is writing there.
    from devicelab.records import check_writable

    def check() -> None:
        for _ in range(1500):
            check_writable(tmp_path)

    assert at_once(check, 2, timeout_s=60) == []
    assert list(tmp_path.iterdir()) == []  # no probe left
