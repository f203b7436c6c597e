"""The contract every sampler keeps, whatever the platform.

    sampler = AndroidSampler(log, device, "app.messaging.test")
    sampler.read_once()          # one reading now (list of Sample), written to the log
    sampler.start(period_s=5.0)  # readings every 5 s from a background thread
    ...
    samples = sampler.stop()     # stops and joins; every sample this sampler took

Each reading is written to the :class:`~devicelab.samplers.log.SampleLog` before it is
returned or kept. In the background thread a reading that raises becomes gap samples
with the error as note (and a warning in the log): the sampler goes on, the run too.
"""

from __future__ import annotations

import logging
import threading
from typing import Self

from devicelab.errors import ProbeFailed
from devicelab.samplers.log import SampleLog
from devicelab.samplers.sample import Sample, gap

__all__ = ["HeldReader", "Sampler"]

logger = logging.getLogger("devicelab.samplers")


class Sampler:
    """Base of the platform samplers: subclasses implement ``_read(t)`` and name the
    metrics a failed reading leaves a gap in (``METRICS``)."""

    SOURCE = "sampler"
    METRICS: tuple[str, ...] = ()

    def __init__(self, log: SampleLog) -> None:
        self.log = log
        self.taken: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _read(self, t: float) -> list[Sample]:
        raise NotImplementedError

    def read_once(self) -> list[Sample]:
        """One reading now, written to the log; returns its samples. Raises what the
        platform's reading raises (DeviceUnreachable, ProbeFailed)."""
        return self._take()

    def _take(self) -> list[Sample]:
        # What the background thread runs: subclasses may add to read_once() readings that
        # belong to the caller's thread (the web page's heap), never to this one.
        with self._lock:
            samples = self._read(self.log.now())
            self.log.write(samples)
            self.taken.extend(samples)
        return samples

    def start(self, period_s: float = 5.0) -> Self:
        """Read every ``period_s`` seconds from a background thread; returns this sampler at
        once (a second call while it runs changes nothing). Raises ValueError when
        ``period_s`` is not above 0."""
        if period_s <= 0:
            raise ValueError("period_s must be > 0")
        if self._thread is not None:
            return self
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(period_s,), name=f"devicelab-{self.SOURCE}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop and join the thread (idempotent, never raises); returns every sample this
        sampler took."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30)
            if thread.is_alive():
                logger.warning("the %s sampler did not stop within 30 s", self.SOURCE)
        return list(self.taken)

    def _loop(self, period_s: float) -> None:
        while not self._stop.is_set():
            try:
                self._take()
            except Exception as exc:  # a bad reading is a gap; the sampler goes on
                logger.warning("%s reading failed: %s", self.SOURCE, exc)
                t = self.log.now()
                gaps = [gap(t, m, self.SOURCE, f"reading failed: {exc}") for m in self.METRICS]
                try:
                    self.log.write(gaps)
                    with self._lock:
                        self.taken.extend(gaps)
                except Exception as err:
                    logger.warning("cannot record the gap: %s", err)
            self._stop.wait(period_s)


class HeldReader:
    """Base of the phones' app-memory readers of the memory checks (AppPss, AppFootprint).

    ``with reader:`` holds the background readings of ``sampler`` off until the block
    ends, so only the check's own reads fall inside the window it measures; inside the
    block, :meth:`_same_app` refuses a read of another pid than the block's first (the
    app restarted: an increase across two processes means nothing).
    """

    #: What to look at when the app restarted between two reads.
    RESTART_HINT = "look for a crash in the device's logs"

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self._pid: int | None = None
        self._held = False

    def _same_app(self, app: str, pid: int | None) -> None:
        """Inside a ``with`` block: raise ProbeFailed when ``pid`` is not the block's first
        read's (``app`` names the app in the message)."""
        if not self._held:
            return
        if self._pid is not None and pid != self._pid:
            raise ProbeFailed(
                f"{app} restarted between two memory reads (pid {self._pid} -> {pid}): no "
                "increase can be measured",
                hint=self.RESTART_HINT,
            )
        self._pid = pid

    def __enter__(self) -> Self:
        self.sampler._lock.acquire()  # the background thread's readings wait for the release
        self._held, self._pid = True, None
        return self

    def __exit__(self, *exc: object) -> None:
        self._held, self._pid = False, None
        self.sampler._lock.release()
