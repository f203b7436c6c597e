"""Plots as inline SVG, in pure Python: no JavaScript, no fonts or images to fetch.

Two kinds, both drawn on the same axes frame (ticks at "nice" numbers, labelled axes):

- ``line_chart``: a series over time (memory, battery, CPU), with optional guides: a
  horizontal target line or a sloped budget (battery drain per hour).
- ``histogram``: the distribution of a check's samples, with p50 and p95 markers and the
  target line when it is on scale (otherwise an "off scale" note at the right edge).

Every plot is one ``<svg class="plot" data-plot="series|distribution">`` element without
an ``xmlns`` attribute (HTML5 inline SVG needs none, and the report must hold no URL).
Colours come from CSS classes the HTML report defines, so the plots follow its theme.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from devicelab.models import percentile
from devicelab.report._common import fmt_number, unit_text

__all__ = ["Guide", "histogram", "line_chart", "nice_ticks"]

_W, _H = 640, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 20, 28, 44
#: Beyond this many points a line is thinned to the min and max of each pixel column.
_MAX_POINTS = 1200


@dataclass(frozen=True)
class Guide:
    """A straight reference line from (x0, y0) to (x1, y1) in data units, with a label.

    ``kind`` is a CSS class: "target" (red) or "budget" (amber)."""

    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    kind: str = "target"


def nice_ticks(low: float, high: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 x 10^k steps) covering low..high;
    ``integer`` keeps the step at 1 or more (counts)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


class _Frame:
    """Maps data to pixels inside the axes and draws the grid, ticks and labels."""

    def __init__(self, xticks: list[float], yticks: list[float]) -> None:
        self.x0, self.x1 = xticks[0], xticks[-1]
        self.y0, self.y1 = yticks[0], yticks[-1]
        self.xticks, self.yticks = xticks, yticks

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return _LEFT + (x - self.x0) / span * (_W - _LEFT - _RIGHT)

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return _H - _BOTTOM - (y - self.y0) / span * (_H - _TOP - _BOTTOM)

    def axes(self, xlabel: str, ylabel: str, xscale: float = 1.0) -> list[str]:
        parts = []
        for y in self.yticks:
            py = self.py(y)
            parts.append(
                f'<line class="grid" x1="{_LEFT}" y1="{py:.1f}" x2="{_W - _RIGHT}" y2="{py:.1f}"/>'
            )
            parts.append(
                f'<text class="tick" x="{_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">'
                f"{fmt_number(y)}</text>"
            )
        for x in self.xticks:
            px = self.px(x)
            parts.append(
                f'<line class="tickmark" x1="{px:.1f}" y1="{_H - _BOTTOM}" x2="{px:.1f}" '
                f'y2="{_H - _BOTTOM + 5}"/>'
            )
            parts.append(
                f'<text class="tick" x="{px:.1f}" y="{_H - _BOTTOM + 18}" text-anchor="middle">'
                f"{fmt_number(x / xscale)}</text>"
            )
        parts.append(f'<path class="axis" d="M{_LEFT} {_TOP} V{_H - _BOTTOM} H{_W - _RIGHT}"/>')
        parts.append(
            f'<text class="label" x="{(_LEFT + _W - _RIGHT) / 2:.0f}" y="{_H - 6}" '
            f'text-anchor="middle">{escape(xlabel)}</text>'
        )
        parts.append(
            f'<text class="label" x="14" y="{(_TOP + _H - _BOTTOM) / 2:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {(_TOP + _H - _BOTTOM) / 2:.0f})">{escape(ylabel)}</text>'
        )
        return parts


def _svg(kind: str, name: str, title: str, body: list[str]) -> str:
    head = (
        f'<svg class="plot" data-plot="{kind}" data-name="{escape(name)}" '
        f'viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
        f'aria-label="{escape(title)}">'
    )
    return "\n".join([head, f"<title>{escape(title)}</title>", *body, "</svg>"])


def _time_scale(span: float) -> tuple[float, str]:
    if span >= 3 * 3600:
        return 3600.0, "time (h)"
    if span >= 600:
        return 60.0, "time (min)"
    return 1.0, "time (s)"


def _thin(t: list[float], v: list[float]) -> list[tuple[float, float]]:
    """At most ~_MAX_POINTS points, keeping each bucket's min and max (spikes stay)."""
    points = list(zip(t, v, strict=True))
    if len(points) <= _MAX_POINTS:
        return points
    size = math.ceil(len(points) / (_MAX_POINTS // 2))
    kept: list[tuple[float, float]] = []
    for start in range(0, len(points), size):
        bucket = points[start : start + size]
        low = min(bucket, key=lambda p: p[1])
        high = max(bucket, key=lambda p: p[1])
        kept += sorted({low, high}, key=lambda p: p[0])
    return kept


def _guide_label(frame: _Frame, guide: Guide) -> str:
    return (
        f'<text class="guide-label {guide.kind}" x="{_W - _RIGHT - 4}" '
        f'y="{frame.py(guide.y1) - 5:.1f}" text-anchor="end">{escape(guide.label)}</text>'
    )


def line_chart(
    name: str, unit: str, t: list[float], v: list[float], guides: list[Guide] | None = None
) -> str:
    """An SVG line chart of one series over time, with ``guides`` drawn over it.

    A series without points gives a frame that says so. Raises nothing.
    """
    guides = guides or []
    shown_unit = unit_text(unit)
    title = f"{name} ({shown_unit}) over time" if shown_unit else f"{name} over time"
    finite = [(a, b) for a, b in zip(t, v, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if not finite:
        frame = _Frame(nice_ticks(0, 1), nice_ticks(0, 1))
        body = frame.axes("time (s)", shown_unit or name)
        body.append(
            f'<text class="empty" x="{_W / 2:.0f}" y="{_H / 2:.0f}" text-anchor="middle">'
            "no points recorded</text>"
        )
        return _svg("series", name, title, body)
    ts = [a for a, _ in finite]
    vs = [b for _, b in finite]
    scale, xlabel = _time_scale(max(ts) - min(ts))
    ys = vs + [g.y0 for g in guides] + [g.y1 for g in guides]
    low, high = min(ys), max(ys)
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    frame = _Frame(
        [x * scale for x in nice_ticks(min(ts) / scale, max(ts) / scale, 6)],
        nice_ticks(max(0.0, low - pad) if low >= 0 else low - pad, high + pad, 5),
    )
    body = frame.axes(xlabel, shown_unit or name, xscale=scale)
    points = _thin(ts, vs)
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{frame.px(x):.1f} {frame.py(y):.1f}"
        for i, (x, y) in enumerate(points)
    )
    body.append(f'<path class="line" d="{path}"/>')
    if len(points) <= 60:
        body += [
            f'<circle class="point" cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="2.5"/>'
            for x, y in points
        ]
    for guide in guides:
        body.append(
            f'<line class="guide {guide.kind}" x1="{frame.px(guide.x0):.1f}" '
            f'y1="{frame.py(guide.y0):.1f}" x2="{frame.px(guide.x1):.1f}" '
            f'y2="{frame.py(guide.y1):.1f}"/>'
        )
        body.append(_guide_label(frame, guide))
    return _svg("series", name, title, body)


def histogram(
    name: str,
    unit: str,
    samples: list[float],
    target: tuple[str, float] | None = None,
) -> str:
    """An SVG histogram of ``samples`` with p50/p95 markers and the ``target`` line
    (label, value) when it falls on the scale. Raises ValueError on no samples."""
    values = sorted(x for x in samples if math.isfinite(x))
    if not values:
        raise ValueError(f"histogram of {name}: no finite samples")
    shown_unit = unit_text(unit)
    title = f"{name}: distribution of {len(values)} samples ({shown_unit})"
    low, high = values[0], values[-1]
    # The target widens the scale only when it is near the data; far away, bars would
    # shrink to a sliver, so it is named at the edge instead.
    on_scale = target is not None and low - (high - low) <= target[1] <= max(high * 2, high + 1)
    if target is not None and on_scale:
        low, high = min(low, target[1]), max(high, target[1])
    xticks = nice_ticks(low, high if high > low else low + 1, 6)
    start, stop = xticks[0], xticks[-1]
    # About sqrt(n) bins across the data itself (not the whole axis, which the target
    # may have widened), at most 60 across the axis.
    spread = (values[-1] - values[0]) or (stop - start) / 10
    width = max(spread / max(5, min(30, math.ceil(math.sqrt(len(values))))), (stop - start) / 60)
    bins = max(1, math.ceil((stop - start) / width - 1e-9))
    counts = [0] * bins
    for x in values:
        counts[min(bins - 1, int((x - start) / width))] += 1
    frame = _Frame(xticks, nice_ticks(0, max(counts), 4, integer=True))
    body = frame.axes(f"{name} ({shown_unit})" if shown_unit else name, "samples")
    for i, count in enumerate(counts):
        if not count:
            continue
        x0, x1 = frame.px(start + i * width), frame.px(start + (i + 1) * width)
        y = frame.py(count)
        body.append(
            f'<rect class="bar" x="{x0 + 0.5:.1f}" y="{y:.1f}" width="{max(1.0, x1 - x0 - 1):.1f}" '
            f'height="{_H - _BOTTOM - y:.1f}"><title>{count} samples in '
            f"{fmt_number(start + i * width)}–{fmt_number(start + (i + 1) * width)}</title></rect>"
        )
    for label, value, kind in (
        ("p50", percentile(values, 50), "p50"),
        ("p95", percentile(values, 95), "p95"),
    ):
        px = frame.px(value)
        body.append(
            f'<line class="marker {kind}" x1="{px:.1f}" y1="{_TOP}" x2="{px:.1f}" '
            f'y2="{_H - _BOTTOM}"/>'
        )
        anchor = "end" if kind == "p50" else "start"
        shift = -4 if kind == "p50" else 4
        body.append(
            f'<text class="marker-label {kind}" x="{px + shift:.1f}" y="{_TOP - 8}" '
            f'text-anchor="{anchor}">{label} {fmt_number(value)}</text>'
        )
    if target is not None:
        label, value = target
        if on_scale:
            px = frame.px(value)
            body.append(
                f'<line class="guide target" x1="{px:.1f}" y1="{_TOP}" x2="{px:.1f}" '
                f'y2="{_H - _BOTTOM}"/>'
            )
            body.append(
                f'<text class="guide-label target" x="{px - 4:.1f}" y="{_TOP + 12}" '
                f'text-anchor="end">target {escape(label)}</text>'
            )
        else:
            body.append(
                f'<text class="guide-label target" x="{_W - _RIGHT}" y="{_TOP + 12}" '
                f'text-anchor="end">target {escape(label)} (off scale)</text>'
            )
    return _svg("distribution", name, title, body)
