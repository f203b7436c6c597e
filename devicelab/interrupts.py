"""SIGTERM and SIGHUP as Ctrl-C: one way to stop for every entry point (the CLI, the
pytest plugin).

A cancelled CI job, ``timeout`` or a service manager sends SIGTERM; a closed terminal or a
dropped ssh connection sends SIGHUP. Python's default is to die on the spot, skipping every
``finally``: a phone would keep its proxy route until the next start undid it from the
journal. Raised as a KeyboardInterrupt instead, it unwinds the same code Ctrl-C does, and
each device, proxy and server is restored on the way out.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["sigterm_as_interrupt"]

#: The signals turned into a KeyboardInterrupt: SIGTERM, and SIGHUP (the terminal is gone).
_STOPPING = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """Within the block, SIGTERM or SIGHUP raises KeyboardInterrupt once (both are then
    ignored, so the restoring finishes: a hung-up terminal may send SIGHUP again, or
    SIGTERM follow it). Yields a list that holds the signal number once one came, to tell
    a SIGTERM or a SIGHUP from a Ctrl-C. Each signal is left alone (nothing installed)
    outside the main thread or when someone else already handles or ignores it (``nohup``
    ignores SIGHUP: it stays ignored)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    ours = [s for s in _STOPPING if signal.getsignal(s) is signal.SIG_DFL]

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        for signum_ in ours:
            signal.signal(signum_, signal.SIG_IGN)
        raise KeyboardInterrupt

    for signum in ours:
        signal.signal(signum, interrupt)
    try:
        yield received
    finally:
        # Back to the default, also when a signal came and ours are ignored now: a process
        # that goes on (a test session, a notebook) and every command it starts would
        # otherwise ignore SIGTERM for good.
        for signum in ours:
            now = signal.getsignal(signum)
            if now is interrupt or (received and now is signal.SIG_IGN):
                signal.signal(signum, signal.SIG_DFL)
