"""The samplers of one device run: the sample log beside results.json, the platform's
sampler in the background, and the series they add to results.json.

    sampling = web_run_sampling(web, out_dir, started)   # log active, sampler started
    record.follow(sampling)                              # series into results.json
    ...
    sampling.close()                                     # stop, deactivate (never raises)
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devicelab.models import Series
from devicelab.samplers.base import Sampler
from devicelab.samplers.log import SAMPLES_FILE, SampleLog, activate, deactivate

__all__ = [
    "DEFAULT_PERIOD_S",
    "RunSampling",
    "android_run_sampling",
    "ios_run_sampling",
    "run_log",
    "web_run_sampling",
]

logger = logging.getLogger("devicelab.samplers")

#: How often the background samplers read during a device run.
DEFAULT_PERIOD_S = 5.0


class RunSampling:
    """The active ``log`` of a run and its background ``samplers``."""

    def __init__(self, log: SampleLog, samplers: list[Sampler]) -> None:
        self.log = log
        self.samplers = samplers

    def stop(self) -> None:
        """Stop the background samplers (idempotent, never raises)."""
        for sampler in self.samplers:
            try:
                sampler.stop()
            except Exception as exc:  # teardown goes on
                logger.warning("stopping the %s sampler failed: %s", sampler.SOURCE, exc)

    def close(self) -> None:
        """Stop the samplers and make the log inactive (never raises)."""
        self.stop()
        deactivate(self.log)

    def series(self) -> list[Series]:
        """The results.json series of every sample written so far."""
        return self.log.series()


def run_log(out_dir: Path, started: datetime) -> SampleLog:
    """The run's active sample log in ``out_dir``, its clock at ``started``."""
    elapsed = (datetime.now(UTC) - started).total_seconds()
    return activate(SampleLog(out_dir / SAMPLES_FILE, t0=time.monotonic() - elapsed))


def web_run_sampling(
    web: Any, out_dir: Path, started: datetime, period_s: float = DEFAULT_PERIOD_S
) -> RunSampling:
    """Sampling of a web run: the log active, and the browser tree's CPU and memory read
    every ``period_s`` (when its process is found; the JS heap is read by the scenarios
    on Playwright's thread). ``web`` is the run's WebDevice. Raises BadInput when
    ``out_dir`` cannot be written."""
    from devicelab.errors import DeviceUnreachable
    from devicelab.samplers.web import WebSampler, find_browser_pid

    log = run_log(out_dir, started)
    samplers: list[Sampler] = []
    try:
        pid = find_browser_pid()
    except DeviceUnreachable as exc:
        logger.warning("no browser CPU/memory samples: %s", exc)
    else:
        heap = getattr(web, "heap_used_mb", None)
        reader = (lambda: {"memory.js_heap_mb": heap()}) if callable(heap) else None
        samplers.append(WebSampler(log, pid, heap=reader).start(period_s))
    return RunSampling(log, samplers)


def android_run_sampling(
    device: Any, package: str, out_dir: Path, started: datetime,
    period_s: float = DEFAULT_PERIOD_S,
) -> RunSampling:  # fmt: skip
    """Sampling of an Android run: the log active, and ``package``'s memory and CPU and
    the battery read every ``period_s`` over adb. ``device`` is adbutils' AdbDevice.
    Raises BadInput when ``out_dir`` cannot be written."""
    from devicelab.samplers.android import AndroidSampler

    log = run_log(out_dir, started)
    return RunSampling(log, [AndroidSampler(log, device, package).start(period_s)])


def ios_run_sampling(
    udid: str, out_dir: Path, started: datetime, process: str | None = None,
    period_s: float = DEFAULT_PERIOD_S,
) -> RunSampling:  # fmt: skip
    """Sampling of an iPhone run: the log active, and every ``period_s`` the battery
    (lockdownd's diagnostics relay, IORegistry) and, when ``process`` is given, that app's
    CPU and memory (sysmontap; gaps with the reason where the instruments cannot be
    reached), through pymobiledevice3. Raises BadInput when ``out_dir`` cannot be
    written."""
    from devicelab.samplers.ios import IosSampler

    log = run_log(out_dir, started)
    return RunSampling(log, [IosSampler(log, udid, process=process).start(period_s)])
