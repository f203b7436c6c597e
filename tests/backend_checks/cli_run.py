"""Running ``devicelab`` in a process of its own, and reading its one error line."""

from __future__ import annotations

import subprocess
import sys


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``devicelab ARGS`` in a process of its own (120 s at most)."""
    return subprocess.run(
        [sys.executable, "-m", "devicelab", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line of ``proc``'s stderr (asserted: no traceback, nothing else)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("devicelab: error:"), proc.stderr
    return lines[0]
