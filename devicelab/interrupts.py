"""SIGTERM and SIGHUP as Ctrl-C, and Ctrl-C held while a device is put back: one way to
stop for every entry point (the CLI, the pytest plugin, and scripts of yours that use the
Python API: ``from devicelab import sigterm_as_interrupt``).

A cancelled CI job, ``timeout`` or a service manager sends SIGTERM; a closed terminal or a
dropped ssh connection sends SIGHUP. Python's default is to die on the spot, skipping every
``finally``: a phone would keep its proxy route until the next start undid it from the
journal. Raised as a KeyboardInterrupt instead, it unwinds the same code Ctrl-C does, and
each device, proxy and server is restored on the way out. The library never installs
these handlers by itself (a host program's own handlers stay its own): a script wraps its
``Lab(...).session(...)`` in ``with sigterm_as_interrupt():`` (docs/device_run.md, "From
Python").

``held_interrupts()`` is the other half: the journal's undo runs inside it, so a signal
that lands while a phone is being put back waits until it is back (``HeldInterrupt``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

__all__ = ["HeldInterrupt", "held_interrupts", "sigterm_as_interrupt"]

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


class HeldInterrupt(KeyboardInterrupt):
    """A Ctrl-C (or SIGTERM) that came while a device was being put back, raised once it
    was back: what it interrupted had finished."""


# Not empty while a held_interrupts() block runs in the main thread: a nested one leaves
# the handlers and the delivery to it.
_HOLDING: list[bool] = []
_HELD_NOTE = b"devicelab: putting the device back first; the interrupt follows once it is done\n"


@contextlib.contextmanager
def held_interrupts() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP are held, not delivered; after it, each
    held signal is delivered to the handler that was there before (Ctrl-C: KeyboardInterrupt,
    raised as HeldInterrupt). Nested blocks hold until the outermost ends. Outside the
    main thread (no signal reaches it) it holds nothing. Raises HeldInterrupt (or what
    the previous SIGTERM handler does) after the block when a signal came."""
    if threading.current_thread() is not threading.main_thread() or _HOLDING:
        yield  # the outermost block holds (and delivers) for this one too
        return
    received: list[int] = []

    def hold(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) == 1:
            # A hung-up terminal or a closed pipe fails this write (EIO, EPIPE): raised
            # here, it would cut the restore it is meant to shield.
            with contextlib.suppress(OSError):
                os.write(2, _HELD_NOTE)  # async-signal-safe, unlike logging

    # A handler installed outside Python (getsignal: None) cannot be put back: left alone;
    # an ignored signal (SIGHUP under nohup) stays ignored: there is nothing to hold.
    before = {
        signum: handler
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        if (handler := signal.getsignal(signum)) is not None and handler is not signal.SIG_IGN
    }
    for signum in before:
        signal.signal(signum, hold)
    _HOLDING.append(True)
    try:
        yield
    finally:
        _HOLDING.clear()
        for signum, handler in before.items():
            signal.signal(signum, handler)
    try:
        for held in dict.fromkeys(received):  # each kind once, in the order they came
            signal.raise_signal(held)  # the handler of before runs right here
    except HeldInterrupt:
        raise
    except KeyboardInterrupt as exc:
        raise HeldInterrupt(*exc.args) from None
