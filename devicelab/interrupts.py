"""SIGTERM as Ctrl-C: one way to stop for every entry point (the CLI, the pytest plugin).

A cancelled CI job, ``timeout`` or a service manager sends SIGTERM. Python's default is to
die on the spot, skipping every ``finally``: a phone would keep its proxy route until the
next start undid it from the journal. Raised as a KeyboardInterrupt instead, it unwinds
the same code Ctrl-C does, and each device, proxy and server is restored on the way out.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["sigterm_as_interrupt"]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """Within the block, SIGTERM raises KeyboardInterrupt once (further SIGTERMs are then
    ignored, so the restoring finishes). Yields a list that holds the signal number once
    one came, to tell a SIGTERM from a Ctrl-C. Left alone (nothing installed) outside the
    main thread or when someone else already handles SIGTERM."""
    received: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield received
        return

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        if signal.getsignal(signal.SIGTERM) is interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
