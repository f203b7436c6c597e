"""An xdist session's SIGTERM and SIGHUP, taken as a terminal's Ctrl-C
(devicelab/pytest_plugin.py uses it).

A worker that runs ``devicelab_lab`` took SIGTERM as Ctrl-C
while its lab was up (the fixture enters ``sigterm_as_interrupt``), but a job runner that
cancels a job signals the process it started: the controller, which runs no fixture. By
Python's default it died on the spot (exit 143): no devicelab summary, and its orphaned
workers tore their labs down only after execnet's grace of some 6 s, their last reports
failing to send ("cannot send (already closed?)").

So when a --devicelab-* option is given, an xdist session takes SIGTERM and SIGHUP as
Ctrl-C in every process, for the whole session: the controller passes the signal on to
its workers (as a signal to the job's process group would reach them) and raises
KeyboardInterrupt; each worker raises KeyboardInterrupt and tears its lab down. Each
process takes one such signal (both are ignored after it, as ``sigterm_as_interrupt``
does), so a worker signalled twice (the group's SIGTERM, then the controller's) is not
interrupted again in its teardown. xdist then collects the workers' ends, and the session
ends with exit 2 and the summary.
"""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING

import pytest

from devicelab.pytest_plugin_checks import worker_id

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType
    from typing import Any

__all__ = ["xdist_stops_like_ctrl_c"]

#: The signals a job runner or a closed terminal sends (as devicelab.interrupts takes them).
_STOPPING = (signal.SIGTERM, signal.SIGHUP)


def xdist_stops_like_ctrl_c(config: pytest.Config) -> None:
    """In an xdist session given a --devicelab-* option, take SIGTERM and SIGHUP as
    Ctrl-C until pytest unconfigures, the controller passing them on to its workers (each
    signal left alone when someone else handles or ignores it already). Does nothing in a
    session without xdist: the ``devicelab_lab`` fixture handles them there."""
    worker = bool(worker_id(config))
    if not worker and config.pluginmanager.getplugin("dsession") is None:
        return
    given = ("--devicelab-out", "--devicelab-device", "--devicelab-inventory")
    network = config.getoption("--devicelab-network")
    if not any(config.getoption(name) for name in given) and network in (None, "none"):
        return  # a suite that does not use devicelab's lab keeps Python's default
    from devicelab.interrupts import sigterm_as_interrupt

    stack = contextlib.ExitStack()
    stack.enter_context(sigterm_as_interrupt() if worker else _passed_on_to_workers())
    config.add_cleanup(stack.close)


@contextlib.contextmanager
def _passed_on_to_workers() -> Iterator[None]:
    """``sigterm_as_interrupt``, its handlers first sending the signal to the workers."""
    from devicelab.interrupts import sigterm_as_interrupt

    before = {signum: signal.getsignal(signum) for signum in _STOPPING}
    with sigterm_as_interrupt():
        wrapped = {}
        for signum, old in before.items():
            handler = signal.getsignal(signum)
            if handler is old or not callable(handler):
                continue  # not installed by sigterm_as_interrupt: someone else's
            forward = _forwarding(handler)
            signal.signal(signum, forward)
            wrapped[signum] = (forward, handler)
        try:
            yield
        finally:
            for signum, (forward, handler) in wrapped.items():
                if signal.getsignal(signum) is forward:  # no signal came: for it to undo
                    signal.signal(signum, handler)


def _forwarding(
    then: Callable[[int, FrameType | None], Any],
) -> Callable[[int, FrameType | None], None]:
    """A handler that sends the signal to the workers, then runs ``then``
    (sigterm_as_interrupt's: KeyboardInterrupt here, on the controller)."""

    def forward(signum: int, frame: FrameType | None) -> None:
        _signal_workers(signum)
        then(signum, frame)

    return forward


def _signal_workers(signum: int) -> None:
    """Send ``signum`` to each xdist worker of this controller: a child started through
    execnet's popen gateway (whose command line is its bootstrap line)."""
    import psutil
    from execnet.gateway_io import popen_bootstrapline

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if popen_bootstrapline in child.cmdline():
                child.send_signal(signum)
