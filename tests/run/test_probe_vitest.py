"""The probes' own unit tests (vitest, capacitor-harness/probe), run as part of pytest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "capacitor-harness"


def test_probe_unit_tests_pass() -> None:
    assert (HARNESS / "node_modules").is_dir(), "run ./dev/setup: it installs the harness"
    npm = shutil.which("npm")
    assert npm is not None, "node and npm are installed by ./dev/setup"
    done = subprocess.run(
        [npm, "test", "--silent"], cwd=HARNESS, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "passed" in done.stdout
