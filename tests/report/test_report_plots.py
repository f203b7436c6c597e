"""The inline SVG plots: ticks, thinning that keeps spikes, edge cases."""

from __future__ import annotations

import re

import pytest

from devicelab.report.plots import Guide, histogram, line_chart, nice_ticks


def path_points(svg: str) -> list[tuple[float, float]]:
    d = re.search(r'<path class="line" d="([^"]+)"', svg)
    assert d
    return [(float(x), float(y)) for x, y in re.findall(r"[ML]([\d.]+) ([\d.]+)", d.group(1))]


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(87.2, 101.3) == [85, 90, 95, 100, 105]
    assert nice_ticks(0, 3, 4, integer=True) == [0, 1, 2, 3]
    ticks = nice_ticks(0.0123, 0.0456)
    assert ticks[0] <= 0.0123 and ticks[-1] >= 0.0456 and len(ticks) <= 8
    assert nice_ticks(5, 5) == [5, 6, 7, 8, 9, 10]


def test_thinning_keeps_the_spike_of_a_long_series() -> None:
    t = [float(i) for i in range(20_000)]
    v = [10.0] * 20_000
    v[12_345] = 90.0
    points = path_points(line_chart("memory", "MB", t, v))
    assert len(points) <= 1300
    # The axis runs 0..100 over pixels 216..28: the flat line sits at 197.2, the spike
    # (90) at 46.8 — it survived the thinning.
    assert max(y for _, y in points) == pytest.approx(197.2)
    assert min(y for _, y in points) == pytest.approx(46.8)


def test_empty_series_and_guides() -> None:
    svg = line_chart("cpu", "%", [], [])
    assert "no points recorded" in svg and 'class="line"' not in svg
    svg = line_chart(
        "battery", "%", [0, 3600], [100, 95], [Guide("budget", 0, 100, 3600, 90, kind="budget")]
    )
    assert '<line class="guide budget"' in svg and ">budget</text>" in svg
    assert "xmlns" not in svg


def test_histogram_markers_and_far_targets() -> None:
    samples = [10.0 + i % 7 for i in range(100)]
    svg = histogram("search", "ms", samples, ("< 500 ms", 500.0))
    assert (
        "target &lt; 500 ms (off scale, above)" in svg and '<line class="guide target"' not in svg
    )
    assert ">p50 13</text>" in svg and ">p95 16</text>" in svg
    svg = histogram("search", "ms", samples, ("< 15 ms", 15.0))
    assert '<line class="guide target"' in svg
    assert sum(int(n) for n in re.findall(r"<title>(\d+) samples in", svg)) == 100
    one = histogram("x", "ms", [42.0])
    assert one.count('class="bar"') == 1
    with pytest.raises(ValueError, match="no finite samples"):
        histogram("x", "ms", [float("nan")])
