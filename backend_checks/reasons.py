"""The one-line reason of a judged backend check: what was compared, and the verdict.

The device checks' reasons come from ``devicelab.targets.judge`` ("p95 210.7 ms misses
< 200 ms"); the backend's health checks build their own verdicts (several figures go into
one), so they say it here, with the same numbers and words (``devicelab.numbers``):
"0 indexes never scanned (...) meets == 0 indexes".
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from devicelab.models import CheckTarget
from devicelab.numbers import check_target_label, fmt_judged

__all__ = ["holds", "judged_reason"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}


def holds(value: float, target: CheckTarget) -> bool:
    """Whether ``value`` (in the target's unit) meets ``target``."""
    return _OPS[target.op](value, target.value)


def judged_reason(said: str, value: float, unit: str, target: CheckTarget, why: str = "") -> str:
    """``said`` with ``{value}`` replaced by the value in the reports' digits, then
    "meets" or "misses" and the bound; ``why`` after a colon when given.

    ``judged_reason("{value} never scanned", 0, "indexes", t)`` returns
    "0 indexes never scanned meets == 0 indexes". Raises nothing.
    """
    verdict = "meets" if holds(value, target) else "misses"
    text = said.replace("{value}", fmt_judged(value, unit, target))
    line = f"{text} {verdict} {check_target_label(target)}"
    return f"{line}: {why}" if why else line
