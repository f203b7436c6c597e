"""Run a helper program so that it cannot outlive the devicelab process that started it.

    python -m devicelab.platforms.orphan_guard PARENT_PID -- COMMAND [ARG ...]

The guard runs COMMAND as its child in its own process group (start it with
``start_new_session=True``) and waits for it. When PARENT_PID is no longer its parent (the
run was killed outright: SIGKILL, a crash, no teardown ran), it sends SIGTERM to the whole
group, COMMAND and what COMMAND started (Appium's drivers, chromedriver), then SIGKILL
after a grace period. A SIGTERM to the guard alone is passed on to COMMAND; the guard
exits with COMMAND's exit code, once COMMAND has exited, so whoever waits on the guard
waits on COMMAND.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

__all__ = ["guarded", "main"]

_POLL_S = 0.5
_GRACE_S = 10.0


def guarded(command: Sequence[str]) -> list[str]:
    """``command`` wrapped so that it ends when this process does."""
    return [sys.executable, "-m", __name__, str(os.getpid()), "--", *command]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns COMMAND's exit code (2 on a bad command line)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        print("usage: orphan_guard PARENT_PID -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    parent, command = int(args[0]), args[2:]
    child = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: _forward(child))
    orphaned_at: float | None = None
    while child.poll() is None:
        if orphaned_at is None and os.getppid() != parent:
            orphaned_at = time.monotonic()
            _signal_all(child, signal.SIGTERM)
        elif orphaned_at is not None and time.monotonic() - orphaned_at > _GRACE_S:
            _signal_all(child, signal.SIGKILL)
        time.sleep(_POLL_S)
    return child.returncode


def _signal_all(child: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """``sig`` to the guard's process group when the guard leads it (COMMAND and all it
    started), else to COMMAND alone: never to a group of someone else's."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), sig)
        else:
            child.send_signal(sig)


def _forward(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
