"""A device this process holds already (a session not yet closed, a nested one) is refused
as ours: no "kill <our own pid>" advice. Another process's hold still names its pid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devicelab.errors import EnvironmentProblem
from devicelab.journal import Journal

_HOLD = """
import sys, time
from devicelab.journal import Journal
claim = Journal(sys.argv[1]).claim("SERIAL1", "in use")
print("held", flush=True)
time.sleep(60)
"""


def test_a_claim_this_process_holds_is_said_to_be_ours(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    held = journal.claim("SERIAL1", "in use")
    try:
        with pytest.raises(EnvironmentProblem) as refused:
            Journal(tmp_path / "journal.jsonl").claim("SERIAL1", "in use")
    finally:
        held.release()
    line = refused.value.one_line()
    assert f"SERIAL1 is already in use by this process (pid {os.getpid()})" in line, line
    assert "session on it is still open" in line and "kill" not in line, line
    journal.claim("SERIAL1", "in use").release()  # released: free again


def test_a_claim_another_process_holds_names_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(EnvironmentProblem) as refused:
            Journal(path).claim("SERIAL1", "in use")
    finally:
        holder.kill()
        holder.wait()
    line = refused.value.one_line()
    assert f"by another devicelab run (pid {holder.pid})" in line, line
    assert f"kill {holder.pid}" in line, line
