"""samples.jsonl: every sample on disk as soon as it is taken (never only in memory).

:class:`SampleLog` appends each sample as one JSON line, flushed and fsynced, under a lock
(samplers write from their own threads). It is also the run's clock: ``now()`` is the
seconds since the run started, the ``t`` of every sample. A torn last line after a crash
is skipped when reading back.

The log of the run going on is *active* (:func:`activate`): scenarios that take samples of
their own (memory_leak) write into it through :func:`active_log`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from devicelab.errors import BadInput
from devicelab.models import Series
from devicelab.samplers.sample import Sample, to_series

__all__ = ["SAMPLES_FILE", "SampleLog", "activate", "active_log", "deactivate"]

logger = logging.getLogger("devicelab.samplers")

#: The file beside results.json.
SAMPLES_FILE = "samples.jsonl"

_active: list[SampleLog] = []  # the run's log, when a run goes on


class SampleLog:
    """The samples of one run in ``path`` (truncated at creation); ``t0`` is the run's start
    on the ``time.monotonic()`` clock (default: now)."""

    def __init__(self, path: str | os.PathLike[str], *, t0: float | None = None) -> None:
        self.path = Path(path)
        self.t0 = time.monotonic() if t0 is None else t0
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"{self.path}: cannot write the sample log ({exc.strerror})",
                           hint="check --out") from exc  # fmt: skip

    def now(self) -> float:
        """Seconds since the run started (ms resolution)."""
        return round(time.monotonic() - self.t0, 3)

    def write(self, samples: Iterable[Sample]) -> None:
        """Append ``samples``, flushed and fsynced before returning.

        Raises BadInput when the file cannot be written."""
        lines = "".join(s.model_dump_json() + "\n" for s in samples)
        if not lines:
            return
        with self._lock:
            try:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(lines)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                raise BadInput(f"{self.path}: cannot append samples ({exc.strerror})",
                               hint="check --out and free space") from exc  # fmt: skip

    def read(self) -> list[Sample]:
        """Every sample written so far (a torn last line is skipped)."""
        with self._lock:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return []
        samples = []
        for line in text.splitlines():
            try:
                samples.append(Sample.model_validate(json.loads(line)))
            except ValueError:
                logger.debug("skipping a torn line of %s", self.path)
        return samples

    def series(self) -> list[Series]:
        """The results.json series of what was written so far."""
        return to_series(self.read())


def activate(log: SampleLog) -> SampleLog:
    """Make ``log`` the run's active log; returns it."""
    _active[:] = [log]
    return log


def deactivate(log: SampleLog | None = None) -> None:
    """No active log any more (only if it is ``log``, when given)."""
    if log is None or (_active and _active[0] is log):
        _active.clear()


def active_log() -> SampleLog | None:
    """The log of the run going on, or None outside a run."""
    return _active[0] if _active else None
