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

import itertools
import math
import sys
from dataclasses import dataclass
from html import escape

from devicelab.models import percentile
from devicelab.report._common import count_text, fmt_number, unit_text

__all__ = ["Guide", "histogram", "line_chart", "nice_ticks", "tick_texts"]

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


#: A span this small against the values is float rounding, not a spread (0.1 + 0.2 vs 0.3).
_RELATIVE_NOISE = 1e-9
#: Below this, magnitudes are treated as zero: subnormal floats break log10 and division.
_TINY = 1e-290
_MAX_FLOAT = sys.float_info.max
#: No axis gets more ticks than this, whatever its input.
_MAX_TICKS = 24
#: Roughly how wide a character of an 11 px label is, to keep labels inside the plot.
_CHAR_PX = 6.2


def nice_ticks(low: float, high: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 x 10^k steps) covering low..high;
    ``integer`` keeps the step at 1 or more (counts).

    Returns 2 to 24 increasing finite floats for any input, each an integer multiple of
    the step (never a running sum, which stops advancing once the step is below the
    values' rounding). A span lost in float rounding counts as none (one value: the axis
    runs from it to twice it, or to 1); near the float range's ends the data's own bounds
    close the axis. Raises nothing.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    low, high = min(low, high), max(low, high)
    magnitude = max(abs(low), abs(high))
    # Halves: the difference of two finite floats can overflow, that of their halves not.
    if high / 2 - low / 2 <= max(magnitude * _RELATIVE_NOISE, _TINY):
        base = low if abs(low) > _TINY else 0.0
        low, high = base, base + (abs(base) or 1.0)
        if not math.isfinite(high):
            low, high = base / 2, base
    raw = (high / 2 - low / 2) / max(1, count) * 2
    if not math.isfinite(raw):
        return [low, high]
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    first, last = math.floor(low / step), math.ceil(high / step)
    if not math.isfinite(step) or last - first > _MAX_TICKS:
        return [low, high]
    places = max(0, 2 - math.floor(math.log10(step)))
    ticks = [
        t for t in (round(k * step, places) for k in range(first, last + 1)) if math.isfinite(t)
    ]
    # Near the float limits the outer multiples overflow: the data's bounds end the axis.
    if not ticks or ticks[0] > low:
        ticks.insert(0, low)
    if ticks[-1] < high:
        ticks.append(high)
    return sorted(set(ticks))


def tick_texts(ticks: list[float], scale: float = 1.0) -> list[str]:
    """Labels for ``ticks`` (divided by ``scale``), all with the precision of the step
    between them, not of each value's size: 84.95, 84.96, 84.97 (never 84.9 three
    times); values from 1e9 up, or below 1e-4, get an exponent so they fit the margin.
    Returns one text per tick, distinct when the ticks are."""
    values = [t / scale for t in ticks]
    gaps = [b / 2 - a / 2 for a, b in itertools.pairwise(values) if b > a]
    step = _clamped(2 * min(gaps)) if gaps else (abs(values[0]) or 1.0)
    big = max(abs(v) for v in values)
    texts = [repr(v) for v in values]
    for extra in range(4):
        if big >= 1e9 or big < 1e-4 or step < 1e-4:
            digits = max(
                1, math.floor(math.log10(big or 1.0)) - math.floor(math.log10(step or 1.0))
            )
            texts = [f"{v:.{min(17, digits + 1 + extra)}g}" for v in values]
        else:
            places = max(0, -math.floor(math.log10(step) + 1e-9)) + extra
            texts = [f"{v:.{places}f}" for v in values]
            # 2.5 x 10^k steps need one place more than their power: 0.25, 0.5, 0.75.
            rest = step * 10**places % 1
            if min(rest, 1 - rest) > 1e-6 and extra == 0:
                continue
        if len(set(texts)) == len(set(values)):
            return [("0" if float(t) == 0 else t) for t in texts]
    return texts


def _fraction(value: float, low: float, high: float) -> float:
    """Where ``value`` sits between ``low`` (0) and ``high`` (1), clipped to -1..2 so a
    pixel is always finite; in halves, so that ±1.7e308 ends do not overflow."""
    span = (high / 2 - low / 2) or 1.0
    frac = (value / 2 - low / 2) / span
    return min(2.0, max(-1.0, frac)) if math.isfinite(frac) else 0.0


def _between(low: float, high: float, frac: float) -> float:
    """The value at ``frac`` of low..high, without overflowing."""
    return low * (1 - frac) + high * frac


def _near(value: float, low: float, high: float) -> bool:
    """Whether a target belongs on the data's scale: no further from the data than the
    data's own span (or a quarter of its size, for flat data). Unit-free: 3 s against
    0.06–0.09 s uploads is off scale, as 3,000 ms against 60–90 ms is."""
    reach = max(high / 2 - low / 2, max(abs(low), abs(high)) / 8) * 2
    return low - reach <= value <= high + reach


def _clamped(value: float) -> float:
    return max(-_MAX_FLOAT, min(_MAX_FLOAT, value))


class _Frame:
    """Maps data to pixels inside the axes and draws the grid, ticks and labels."""

    def __init__(self, xticks: list[float], yticks: list[float]) -> None:
        self.x0, self.x1 = xticks[0], xticks[-1]
        self.y0, self.y1 = yticks[0], yticks[-1]
        self.xticks, self.yticks = xticks, yticks

    def fx(self, x: float) -> float:
        """``x`` as a fraction of the x axis (0 at its start, 1 at its end)."""
        return _fraction(x, self.x0, self.x1)

    def px(self, x: float) -> float:
        return _LEFT + self.fx(x) * (_W - _LEFT - _RIGHT)

    def py(self, y: float) -> float:
        return _H - _BOTTOM - _fraction(y, self.y0, self.y1) * (_H - _TOP - _BOTTOM)

    def axes(self, xlabel: str, ylabel: str, xscale: float = 1.0) -> list[str]:
        parts = []
        for y, text in zip(self.yticks, tick_texts(self.yticks), strict=True):
            py = self.py(y)
            parts.append(
                f'<line class="grid" x1="{_LEFT}" y1="{py:.1f}" x2="{_W - _RIGHT}" y2="{py:.1f}"/>'
            )
            # A label wider than the margin is squeezed into it rather than cut at the edge.
            room = _LEFT - 8
            fit = (
                f' textLength="{room}" lengthAdjust="spacingAndGlyphs"'
                if len(text) * _CHAR_PX > room
                else ""
            )
            parts.append(
                f'<text class="tick" x="{_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end"{fit}>'
                f"{text}</text>"
            )
        for x, text in zip(self.xticks, tick_texts(self.xticks, xscale), strict=True):
            px = self.px(x)
            parts.append(
                f'<line class="tickmark" x1="{px:.1f}" y1="{_H - _BOTTOM}" x2="{px:.1f}" '
                f'y2="{_H - _BOTTOM + 5}"/>'
            )
            parts.append(
                f'<text class="tick" x="{px:.1f}" y="{_H - _BOTTOM + 18}" text-anchor="middle">'
                f"{text}</text>"
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


def _label(cls: str, px: float, y: float, text: str, side: str) -> str:
    """A label beside ``px``: to its right (``side`` "right") or left, moved inward
    when it would run past either edge of the plot."""
    width = len(text) * _CHAR_PX
    left = px + 4 if side == "right" else px - 4 - width
    left = min(max(left, 2.0), _W - 2 - width)
    return (
        f'<text class="{cls}" x="{left:.1f}" y="{y:.1f}" text-anchor="start">{escape(text)}</text>'
    )


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


def line_chart(
    name: str, unit: str, t: list[float], v: list[float], guides: list[Guide] | None = None
) -> str:
    """An SVG line chart of one series over time, with ``guides`` drawn over it.

    A horizontal target guide spans the whole time axis (a single point has no width to
    draw it on) and widens the value axis only when it is near the data; a far one is a
    note "(off scale)" at the edge it lies beyond, so the data keeps the plot's height.
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
    scale, xlabel = _time_scale(_clamped(max(ts) - min(ts)))
    data_low, data_high = min(vs), max(vs)
    flat = [g for g in guides if g.kind == "target" and g.y0 == g.y1]
    drawn = [g for g in guides if g not in flat or _near(g.y0, data_low, data_high)]
    ys = (
        vs
        + [g.y0 for g in drawn if math.isfinite(g.y0)]
        + [g.y1 for g in drawn if math.isfinite(g.y1)]
    )
    low, high = min(ys), max(ys)
    half = high / 2 - low / 2
    magnitude = max(abs(low), abs(high))
    noise = half <= magnitude * _RELATIVE_NOISE
    pad = (magnitude * 0.05 if noise else half * 0.1) or 1.0
    bottom = max(0.0, low - pad) if low >= 0 else _clamped(low - pad)
    frame = _Frame(
        [_clamped(x * scale) for x in nice_ticks(min(ts) / scale, max(ts) / scale, 6)],
        nice_ticks(bottom, _clamped(high + pad), 5),
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
        if guide not in drawn:
            above = guide.y0 > data_high
            y = _TOP + 12 if above else _H - _BOTTOM - 6
            where = "above" if above else "below"
            body.append(
                _label(
                    f"guide-label {guide.kind}",
                    _W - _RIGHT,
                    y,
                    f"{guide.label} (off scale, {where})",
                    "left",
                )
            )
            continue
        x0, x1 = (frame.x0, frame.x1) if guide in flat else (guide.x0, guide.x1)
        body.append(
            f'<line class="guide {guide.kind}" x1="{frame.px(x0):.1f}" '
            f'y1="{frame.py(guide.y0):.1f}" x2="{frame.px(x1):.1f}" '
            f'y2="{frame.py(guide.y1):.1f}"/>'
        )
        body.append(
            _label(
                f"guide-label {guide.kind}",
                _W - _RIGHT,
                frame.py(guide.y1) - 5,
                guide.label,
                "left",
            )
        )
    return _svg("series", name, title, body)


def histogram(
    name: str,
    unit: str,
    samples: list[float],
    target: tuple[str, float] | None = None,
) -> str:
    """An SVG histogram of ``samples`` with p50/p95 markers and the ``target`` line
    (label, value) when it is near the data, else a note at the edge it lies beyond.
    The bars divide the axis evenly, so the last ends on the axis's end. Raises
    ValueError on no finite samples."""
    values = sorted(x for x in samples if math.isfinite(x))
    if not values:
        raise ValueError(f"histogram of {name}: no finite samples")
    shown_unit = unit_text(unit)
    title = f"{name}: distribution of {count_text(len(values), 'sample')} ({shown_unit})"
    low, high = values[0], values[-1]
    on_scale = target is not None and _near(target[1], low, high)
    if target is not None and on_scale:
        low, high = min(low, target[1]), max(high, target[1])
    xticks = nice_ticks(low, high, 6)
    start, stop = xticks[0], xticks[-1]
    frame_x = _Frame(xticks, [0.0, 1.0])
    # About sqrt(n) bins across the data itself (not the whole axis, which the target may
    # have widened), at most 60 across the axis; in fractions of the axis, which never
    # overflow, and a whole number of them, so the last bar ends where the axis does.
    spread = frame_x.fx(values[-1]) - frame_x.fx(values[0])
    width = max((spread or 0.1) / max(5, min(30, math.ceil(math.sqrt(len(values))))), 1 / 60)
    bins = max(1, min(60, math.ceil(1 / width - 1e-9)))
    counts = [0] * bins
    for x in values:
        counts[min(bins - 1, max(0, int(frame_x.fx(x) * bins)))] += 1
    frame = _Frame(xticks, nice_ticks(0, max(counts), 4, integer=True))
    body = frame.axes(f"{name} ({shown_unit})" if shown_unit else name, "samples")
    plot_w = _W - _LEFT - _RIGHT
    for i, count in enumerate(counts):
        if not count:
            continue
        x0, x1 = _LEFT + plot_w * i / bins, _LEFT + plot_w * (i + 1) / bins
        y = frame.py(count)
        low_edge, high_edge = _between(start, stop, i / bins), _between(start, stop, (i + 1) / bins)
        body.append(
            f'<rect class="bar" x="{x0 + 0.5:.1f}" y="{y:.1f}" width="{max(1.0, x1 - x0 - 1):.1f}" '
            f'height="{_H - _BOTTOM - y:.1f}"><title>{count_text(count, "sample")} in '
            f"{fmt_number(low_edge)}–{fmt_number(high_edge)}</title></rect>"
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
        side = "left" if kind == "p50" else "right"
        body.append(
            _label(f"marker-label {kind}", px, _TOP - 8, f"{label} {fmt_number(value)}", side)
        )
    if target is not None:
        label, value = target
        if on_scale:
            px = frame.px(value)
            body.append(
                f'<line class="guide target" x1="{px:.1f}" y1="{_TOP}" x2="{px:.1f}" '
                f'y2="{_H - _BOTTOM}"/>'
            )
            # On the side with more room: a failing target left of the data is not cut.
            side = "left" if px > (_LEFT + _W - _RIGHT) / 2 else "right"
            body.append(_label("guide-label target", px, _TOP + 12, f"target {label}", side))
        elif value > high:
            body.append(
                _label(
                    "guide-label target",
                    _W - _RIGHT,
                    _TOP + 12,
                    f"target {label} (off scale, above)",
                    "left",
                )
            )
        else:
            body.append(
                _label(
                    "guide-label target",
                    _LEFT,
                    _TOP + 12,
                    f"target {label} (off scale, below)",
                    "right",
                )
            )
    return _svg("distribution", name, title, body)
