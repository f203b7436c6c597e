"""The battery farm's runs as processes: each phone's ``devicelab run`` (``Run``: its
process and the thread copying its output), the farm's signals passed on to them once
(``stopping``, ``interrupt``) and the wait for them all (``wait_all``). devicelab.farm
starts them and sums them up."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import IO, Any

__all__ = ["STOPS", "Run", "Say", "interrupt", "signal_name", "stopping", "wait_all"]

Say = Callable[[str], None]
#: The signals that stop the farm, each passed on to the runs as one Ctrl-C.
STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_HELD_NOTE = (
    b"devicelab: the runs are restoring their phones; the farm writes farm.json once they "
    b"are done (a run stuck past a minute is killed)\n"
)


def signal_name(signum: int) -> str:
    """The name of signal ``signum`` (``SIGTERM``), or ``signal N`` for one without."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def stopping(runs: dict[str, Run]) -> Iterator[Callable[[], None]]:
    """Within the block, the first SIGINT, SIGTERM or SIGHUP passes a Ctrl-C on to every
    run in ``runs`` (once), then does what the handler before it did (the CLI's: a
    KeyboardInterrupt it exits 130, 143 or 129 for) or raises KeyboardInterrupt; every
    later one is ignored with a note, so the wait for the runs and farm.json are not cut
    short (a second KeyboardInterrupt did that). A signal ignored before (``nohup``: SIGHUP;
    a script's ``cmd &``: SIGINT) stays ignored, but the runs start with SIGINT working.
    Yields ``hold``, which ignores the three again (the handler before may have put its
    own back). The handlers before are back after the block."""
    noted: list[bool] = []

    def later(signum: int, frame: Any) -> None:
        if not noted:
            noted.append(True)
            # Async-signal-safe, unlike logging; a terminal that is gone must not raise here.
            with contextlib.suppress(OSError):
                os.write(2, _HELD_NOTE)

    def hold() -> None:
        for signum in before:
            signal.signal(signum, later)

    def first(signum: int, frame: Any) -> None:
        hold()
        interrupt(runs)
        previous = before[signum]
        if callable(previous):
            previous(signum, frame)
        raise KeyboardInterrupt

    # A handler installed outside Python (getsignal: None) cannot be put back: left alone.
    before: dict[int, Callable[[int, FrameType | None], Any] | int] = {
        signum: handler
        for signum in STOPS
        if (handler := signal.getsignal(signum)) is not None and handler is not signal.SIG_IGN
    }
    # A farm started in the background by a script (`nohup devicelab battery ... &`, cron,
    # CI) inherits SIGINT ignored, and an ignored signal stays ignored across exec: its
    # runs would ignore the Ctrl-C it passes on, and be killed after the grace with their
    # phones still changed. A handler of Python's is reset to the default by exec, so the
    # runs start with Ctrl-C working; the farm itself still ignores SIGINT, as it was told.
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, lambda signum, frame: None)
    for signum in before:
        signal.signal(signum, first)
    try:
        yield hold
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class Run:
    """One phone's process and the thread that copies its output to run.log and say."""

    def __init__(
        self, device: str, process: subprocess.Popen[str], log: IO[str], started: float
    ) -> None:
        self.device = device
        self.process = process
        self.log = log
        self.started = started  # time.time() before it was started
        self.reader: threading.Thread | None = None
        self.error = ""  # the run's own one-line error, if it printed one
        # It printed its `results:` line: its check ended and its phone was put back.
        self.summarised = False
        self.interrupted = False  # SIGINT sent: once, a second one would cut its restore
        self.killed = False  # SIGKILL sent: it outlived the grace after the farm stopped it

    def pump(self, say: Say) -> None:
        stream = self.process.stdout
        if stream is None:
            return
        with self.log:
            for line in stream:
                self.log.write(line)
                self.log.flush()
                if line.startswith("devicelab: error: "):
                    self.error = line.removeprefix("devicelab: error: ").strip()
                elif line.startswith("results: "):
                    self.summarised = True
                say(f"[{self.device}] {line.rstrip()}")


def interrupt(runs: dict[str, Run]) -> None:
    """Ask each run still going to stop (SIGINT, once: it restores its phone then)."""
    for run in runs.values():
        if run.process.poll() is None and not run.interrupted:
            run.interrupted = True
            run.process.send_signal(signal.SIGINT)


def wait_all(runs: dict[str, Run], grace_s: float | None = None) -> dict[str, int]:
    """Each run's exit code, once all have ended (killed after ``grace_s`` if given)."""
    deadline = None if grace_s is None else time.monotonic() + grace_s
    codes = {}
    for device, run in runs.items():
        timeout = None if deadline is None else max(0.1, deadline - time.monotonic())
        try:
            codes[device] = run.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.killed = True
            run.process.kill()
            codes[device] = run.process.wait()
        if run.reader is not None:
            run.reader.join(timeout=5)
    return codes
