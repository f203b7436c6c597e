"""HDR histogram helpers: one shape for every histogram, microseconds in, milliseconds out.

Every histogram spans 1 us to one hour at 3 significant digits, so any two can be
merged (``decode_and_add``) after travelling between processes in encoded form.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["HIGHEST_US", "LOWEST_US", "SIGNIFICANT", "merge", "new", "summary_ms"]

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT = 3


def new() -> Any:
    """An empty histogram of the common shape (``hdrh.histogram.HdrHistogram``)."""
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


def merge(encoded: Iterable[str]) -> Any:
    """One histogram holding every encoded histogram of ``encoded`` (empty ones skipped)."""
    merged = new()
    for text in encoded:
        if text:
            merged.decode_and_add(text.encode("ascii"))
    return merged


def summary_ms(histogram: Any) -> dict[str, float]:
    """p50, p95, p99, max and mean of ``histogram`` in milliseconds (0 when empty)."""
    if histogram.get_total_count() == 0:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    return {
        "p50_ms": histogram.get_value_at_percentile(50) / 1000,
        "p95_ms": histogram.get_value_at_percentile(95) / 1000,
        "p99_ms": histogram.get_value_at_percentile(99) / 1000,
        "max_ms": histogram.get_max_value() / 1000,
        "mean_ms": histogram.get_mean_value() / 1000,
    }
