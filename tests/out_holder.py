"""Another process holding an --out folder, as a devicelab run writing there does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLD = """
import sys, time
from pathlib import Path
from devicelab.records import claim_out
with claim_out(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_out(out: Path) -> subprocess.Popen[str]:
    """A process claiming ``out`` (records.claim_out) until killed; returns once it holds."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc
