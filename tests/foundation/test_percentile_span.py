"""One percentile for results and plots: exact on equal samples, and no overflow when the
samples lie further apart than the largest float (the plots' copy did the one, the
results' copy the other)."""

from __future__ import annotations

import random

from devicelab.models import percentile, summarize
from devicelab.report.plots import histogram


def test_samples_further_apart_than_the_largest_float_interpolate() -> None:
    assert percentile([-1.7e308, 1.7e308], 50) == 0.0
    summary = summarize([-1.7e308, 1.7e308, 1.7e308])
    assert summary is not None and summary.p50 == 1.7e308
    assert percentile([-1.7e308, 1.7e308], 95) == -1.7e308 * 0.05 + 1.7e308 * 0.95


def test_equal_samples_give_that_sample_exactly() -> None:
    picks = random.Random(7)
    for _ in range(2000):
        value = picks.random() * picks.choice([1.0, 100.0, 1e6])
        assert percentile([value] * picks.randint(2, 40), 95) == value


def test_the_histogram_of_samples_beyond_float_range_marks_finite_percentiles() -> None:
    svg = histogram("message_delivery", "ms", [-1.7e308, 1.7e308, 1.7e308])
    assert "p50" in svg and "p95" in svg
    assert "nan" not in svg.lower() and "inf" not in svg.lower()
