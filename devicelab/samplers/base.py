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

from devicelab.samplers.log import SampleLog
from devicelab.samplers.sample import Sample, gap

__all__ = ["Sampler"]

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
        """Read every ``period_s`` seconds from a background thread; returns at once."""
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
