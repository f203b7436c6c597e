"""One schema for every sampler: :class:`Sample`, the metrics' units, and the series of
results.json made from samples.

A sample is one reading of one metric at ``t`` seconds since the run started. A reading
that could not be taken (the app was not running, sysmontap was silent) is still a sample:
``value`` None and ``note`` saying why, so a gap is visible in samples.jsonl and never
silently interpolated. Series (results.json) carry only the values that exist.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from devicelab.models import Series

__all__ = ["METRICS", "Sample", "gap", "to_series"]

#: Every metric a sampler emits and its unit. CPU percentages are shares of the whole
#: device (every core together is 100 %); MB is 10^6 bytes; battery.charging is 1 or 0.
METRICS: dict[str, str] = {
    "memory.pss_mb": "MB",
    "memory.rss_mb": "MB",
    "memory.swap_pss_mb": "MB",
    "memory.js_heap_mb": "MB",
    "memory.js_heap_total_mb": "MB",
    "memory.footprint_mb": "MB",
    "cpu.app_pct": "%",
    "cpu.renderer_pct": "%",
    "cpu.total_pct": "%",
    "battery.level_pct": "%",
    "battery.current_ma": "mA",
    "battery.voltage_mv": "mV",
    "battery.temperature_c": "°C",
    "battery.charging": "bool",
    "battery.charge_mah": "mAh",
}


class Sample(BaseModel):
    """One reading: ``metric`` (a key of METRICS) at ``t`` s since the run's start.

    ``value`` None is a gap; ``note`` says why. ``source`` names what was read
    (e.g. "dumpsys meminfo", "cdp", "psutil", "ioregistry").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    t: float = Field(description="seconds since the run started")
    metric: str
    value: float | None
    unit: str
    source: str
    note: str = ""


def gap(t: float, metric: str, source: str, note: str) -> Sample:
    """A sample that could not be taken, and why."""
    return Sample(t=t, metric=metric, value=None, unit=METRICS.get(metric, ""), source=source,
                  note=note)  # fmt: skip


def to_series(samples: Iterable[Sample]) -> list[Series]:
    """The results.json series of ``samples``: one per metric (named after it), or one per
    metric and source (``metric[source]``) when several sources read values of the same
    metric.

    Gaps (value None) are left out, and a source with only gaps is no source; points keep
    their order of ``t``.
    """
    grouped: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        grouped.setdefault((sample.metric, sample.source), []).append(sample)
    sources: dict[str, int] = {}
    for (metric, _source), group in grouped.items():
        # A source with only gaps read nothing: a failed reading (source "adb") must not
        # rename the metric's one series to metric[source].
        if any(s.value is not None for s in group):
            sources[metric] = sources.get(metric, 0) + 1
    series: list[Series] = []
    for (metric, source), group in grouped.items():
        points = sorted((s.t, s.value) for s in group if s.value is not None)
        if not points:
            continue
        name = metric if sources[metric] == 1 else f"{metric}[{source}]"
        t, v = [p[0] for p in points], [p[1] for p in points]
        series.append(Series(name=name, unit=group[0].unit, t=t, v=v))
    return series
