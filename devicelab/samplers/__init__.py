"""Memory, CPU and battery samplers for every platform, one schema (docs/samplers.md).

Every sampler keeps the same contract (:class:`Sampler`: ``start(period_s)``, ``stop()``,
``read_once()``), reads in a background thread and writes each :class:`Sample` to the
run's ``samples.jsonl`` (:class:`SampleLog`) as it comes; :func:`to_series` makes the
results.json series. Platform modules (android, ios, web) import their libraries inside
their calls, so importing this package stays light.
"""

from __future__ import annotations

from devicelab.samplers.base import Sampler
from devicelab.samplers.battery import BatteryReading
from devicelab.samplers.log import SAMPLES_FILE, SampleLog, activate, active_log, deactivate
from devicelab.samplers.run import (
    RunSampling,
    android_run_sampling,
    ios_run_sampling,
    web_run_sampling,
)
from devicelab.samplers.sample import METRICS, Sample, gap, to_series
from devicelab.samplers.trend import least_squares_slope, theil_sen_slope

__all__ = [
    "METRICS",
    "SAMPLES_FILE",
    "BatteryReading",
    "RunSampling",
    "Sample",
    "SampleLog",
    "Sampler",
    "activate",
    "active_log",
    "android_run_sampling",
    "deactivate",
    "gap",
    "ios_run_sampling",
    "least_squares_slope",
    "theil_sen_slope",
    "to_series",
    "web_run_sampling",
]
