"""How the lab writes a measured number and its unit: the reports, the terminal lines and
each check's reason all say "p95 210.7 ms misses < 200 ms" and "0.8 MB/min" alike."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

from devicelab.models import CheckTarget

__all__ = [
    "check_target_label",
    "fmt_judged",
    "fmt_number",
    "fmt_value",
    "target_label",
    "unit_text",
]

#: Units as targets.yaml spells them -> as a reader expects them; a compound unit
#: ("MB_per_min", "pct_per_hour") is written with "/" and these parts ("MB/min", "%/h").
_UNIT_TEXT = {"pct": "%", "percent": "%", "hour": "h", "hours": "h", "minute": "min"}

#: Units that count things (targets.yaml spells them plural), and their singular: "1 scan",
#: "0 scans". Only these: a measure ("1 ms", "1 MB", "1 s") reads the same for any number.
_SINGULAR = {
    "scans": "scan",
    "problems": "problem",
    "indexes": "index",
    "statements": "statement",
    "users": "user",
    "test messages": "test message",
}


def fmt_number(value: float, digits: int | None = None) -> str:
    """A measured number for people: 312, 45.7, 1.25, 0.0123; an exponent from 1e15 up
    (1.7e+308, never 309 digits); "NaN", "∞" or "-∞" when it is no number. ``digits``
    asks for that many significant digits instead (``fmt_judged`` needs them)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    magnitude = abs(value)
    if magnitude >= 1e15:
        return f"{value:.{digits or 4}g}"
    if digits is not None:
        places = max(0, digits - 1 - math.floor(math.log10(magnitude))) if magnitude else 0
        text = f"{value:.{places}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if float(value).is_integer():
        return str(int(value))
    if magnitude >= 1000:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    if "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    return text


def unit_text(unit: str) -> str:
    """A unit as people write it ("pct_per_hour" -> "%/h", "MB_per_min" -> "MB/min")."""
    return "/".join(_UNIT_TEXT.get(part, part) for part in unit.split("_per_"))


def _with_unit(number: str, unit: str) -> str:
    shown = unit_text(unit)
    if number == "1":
        shown = _SINGULAR.get(shown, shown)
    if not shown:
        return number
    return f"{number}{'' if shown == '%' else ' '}{shown}"


def fmt_value(value: float | None, unit: str) -> str:
    """``value`` with its unit ("312 ms", "8.5 %/h"), or "—" when nothing was measured."""
    if value is None:
        return "—"
    return _with_unit(fmt_number(value), unit)


_HOLDS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}


def fmt_judged(value: float | None, unit: str, target: CheckTarget | None) -> str:
    """``value`` with its unit, as ``fmt_value``, but with as many digits as it takes for
    the shown number to stand on the same side of ``target`` as the value itself: a
    passing 199.96 ms against "< 200 ms" shows "199.96 ms", never "200 ms"."""
    if value is None or target is None or not math.isfinite(value) or target.unit != unit:
        return fmt_value(value, unit)
    holds = _HOLDS[target.op]
    verdict = holds(value, target.value)
    text = fmt_number(value)
    for digits in range(2, 18):
        shown = float(text)
        if holds(shown, target.value) == verdict and (shown != target.value or value == shown):
            break
        text = fmt_number(value, digits)
    return _with_unit(text, unit)


def target_label(op: str, value: float | None, unit: str) -> str:
    """A bound as text: "< 500 ms", or "N/A" when there is no value."""
    if value is None:
        return "N/A"
    return f"{op} {fmt_value(value, unit)}"


def check_target_label(target: CheckTarget | None) -> str:
    """The bound a check was judged against, or "—" when it had none."""
    if target is None:
        return "—"
    return target_label(target.op, target.value, target.unit)
