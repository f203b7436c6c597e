"""A ``devicelab backend serve`` process for the tests that run it whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["SERVE", "start_serve"]

SERVE = [sys.executable, "-m", "devicelab", "backend", "serve"]


def start_serve(state: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``devicelab backend serve ARGS`` with DEVICELAB_STATE ``state``, and its three
    printed SUPABASE_* lines (name -> value). Raises AssertionError with its stderr when
    it ends before printing them."""
    proc = subprocess.Popen(
        [*SERVE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "DEVICELAB_STATE": str(state)},
    )  # fmt: skip
    assert proc.stdout is not None
    lines: dict[str, str] = {}
    while len(lines) < 3:
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise AssertionError(proc.communicate()[1])
        name, _, value = line.strip().partition("=")
        lines[name] = value
    return proc, lines
