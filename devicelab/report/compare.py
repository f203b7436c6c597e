"""A run compared with a baseline run: which checks got worse, which got better.

    comparison = compare(load_results("new/results.json"), load_results("old/results.json"))
    for change in comparison.regressed:
        print(change.id, change.why)

Each check is compared on its value (the statistic its target judges: p95 of the samples
for most) in its unit (ms and s convert). Better is what the target says: lower for ``<``
and ``<=``, higher for ``>`` and ``>=``, nearer the target for ``==``; a check with no
target in either run has its change shown and no verdict. A check regressed (or
improved) when its value moved the worse (better) way by more than the threshold, 10 % of
the baseline's value by default, and, when both runs kept at least
:data:`MIN_SAMPLES` samples, the two sets of samples differ beyond chance (Mann-Whitney U,
two-sided p < :data:`ALPHA`): the p95 of 20 samples moves by a few percent between two runs
of the same build, and a threshold alone would call that noise a regression.

Not compared, with the reason: a check missing from one run, skipped or in error in one,
a lower bound (a check cut short), another statistic or units that do not convert. Pure:
no I/O; the renderers and ``devicelab report --baseline`` show it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from devicelab.models import Check, CheckTarget, Results, RunInfo
from devicelab.numbers import fmt_number, fmt_value
from devicelab.report._common import is_unjudged, redacted
from devicelab.targets import convert

__all__ = [
    "ALPHA",
    "DEFAULT_THRESHOLD_PCT",
    "MIN_SAMPLES",
    "CheckChange",
    "Comparison",
    "Verdict",
    "compare",
    "mann_whitney_p",
]

#: How far (in % of the baseline's value) a check must move to count as changed.
DEFAULT_THRESHOLD_PCT = 10.0
#: The fewest samples on each side for the test of noise; with fewer, the threshold alone.
MIN_SAMPLES = 5
#: The p-value under which two runs' samples differ beyond chance.
ALPHA = 0.05

Verdict = Literal["regressed", "improved", "unchanged", "unjudged", "not compared"]

#: The order of a comparison's rows: what needs reading first.
_ORDER: dict[Verdict, int] = {
    "regressed": 0,
    "improved": 1,
    "unchanged": 2,
    "unjudged": 3,
    "not compared": 4,
}


@dataclass(frozen=True)
class CheckChange:
    """One check in both runs (or in one) and what the comparison concluded.

    ``moved`` says the move (``p95 198 ms → 231 ms (+16.7 %, p<0.001)``, empty when not
    compared) and ``why`` the verdict's reason, one line; ``change_pct`` is the move in %
    of the baseline's value, signed as the values move (infinite from 0); ``p_value`` the
    Mann-Whitney p of the two runs' samples when both had enough."""

    id: str
    title: str
    before: Check | None
    after: Check | None
    verdict: Verdict
    why: str
    moved: str = ""
    change_pct: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Comparison:
    """A run against its baseline: a CheckChange per check id of either run (regressions
    first), the threshold used, and notes on what differs between the two runs."""

    baseline: RunInfo
    threshold_pct: float
    changes: list[CheckChange]
    notes: list[str]

    def having(self, verdict: Verdict) -> list[CheckChange]:
        """The changes with ``verdict``, in the comparison's order."""
        return [c for c in self.changes if c.verdict == verdict]

    @property
    def regressed(self) -> list[CheckChange]:
        """The checks that got worse beyond the threshold and beyond noise."""
        return self.having("regressed")

    def counts_text(self) -> str:
        """``1 regressed, 0 improved, 9 unchanged, 2 unjudged, 5 not compared``."""
        return ", ".join(f"{len(self.having(v))} {v}" for v in _ORDER)


def compare(
    results: Results, baseline: Results, *, threshold_pct: float = DEFAULT_THRESHOLD_PCT
) -> Comparison:
    """Compare ``results`` (this run) with ``baseline`` check by check. Raises ValueError
    for a threshold that is not a finite number > 0."""
    if not (math.isfinite(threshold_pct) and threshold_pct > 0):
        raise ValueError(f"threshold {threshold_pct!r} %: expected a finite number > 0")
    # Its ids, titles and notes go into reports and onto the terminal: masked first.
    results, baseline = redacted(results), redacted(baseline)
    before = {c.id: c for c in baseline.checks}
    after = {c.id: c for c in results.checks}
    ids = list(after) + [i for i in before if i not in after]
    changes = [_change(i, before.get(i), after.get(i), threshold_pct) for i in ids]
    changes.sort(key=lambda c: _ORDER[c.verdict])  # stable: each group in run order
    return Comparison(
        baseline=baseline.run,
        threshold_pct=threshold_pct,
        changes=changes,
        notes=_differences(results.run, baseline.run),
    )


def _differences(now: RunInfo, then: RunInfo) -> list[str]:
    """What differs between the two runs in a way that moves values by design."""
    notes = []
    if now.id == then.id:
        notes.append(f"the baseline is this same run ({now.id})")
    if now.kind != then.kind:
        notes.append(f"the baseline is a {then.kind} run, this one a {now.kind} run")
    was = then.device.id if then.device else None
    is_ = now.device.id if now.device else None
    if was != is_:
        notes.append(f"the baseline ran on device {was or 'none'}, this run on {is_ or 'none'}")
    was_net = then.network.name if then.network else "none"
    is_net = now.network.name if now.network else "none"
    if was_net != is_net:
        notes.append(f"the baseline ran on network {was_net}, this run on {is_net}")
    return notes


def _change(
    check_id: str, before: Check | None, after: Check | None, threshold_pct: float
) -> CheckChange:
    """The comparison of check ``check_id`` in the baseline (``before``) and this run."""
    shown = after or before
    title = shown.title if shown is not None else check_id
    skipped = _not_comparable(before, after)
    if skipped or before is None or after is None:
        return CheckChange(check_id, title, before, after, "not compared", skipped or "")
    then = convert(before.value or 0.0, before.unit, after.unit)
    now = after.value or 0.0
    change = _pct(then, now)
    moved = f"{after.stat} {fmt_value(then, after.unit)} → {fmt_value(now, after.unit)}"
    moved += f" ({_signed_pct(change)}"
    p_value = None
    if len(before.samples) >= MIN_SAMPLES and len(after.samples) >= MIN_SAMPLES:
        samples_then = [convert(v, before.unit, after.unit) for v in before.samples]
        p_value = mann_whitney_p(samples_then, after.samples)
        moved += f", {_p_text(p_value)}"
    moved += ")"
    target = after.target or before.target
    verdict: Verdict
    if target is None:
        verdict, why = "unjudged", f"{moved}; no target says which way is better"
    else:
        verdict, why = _verdict(moved, then, now, target, change, p_value, threshold_pct)
    if before.status != after.status:
        why += f"; {before.status} → {after.status}"
    return CheckChange(check_id, title, before, after, verdict, why, moved, change, p_value)


def _verdict(
    moved: str,
    then: float,
    now: float,
    target: CheckTarget,
    change: float,
    p_value: float | None,
    threshold_pct: float,
) -> tuple[Verdict, str]:
    """The verdict on a move from ``then`` to ``now`` judged by ``target``, and why."""
    limit = f"{fmt_number(threshold_pct)} %"
    worse = _badness(now, target) > _badness(then, target)
    better = _badness(now, target) < _badness(then, target)
    if abs(change) <= threshold_pct or not (worse or better):
        return "unchanged", f"{moved}: within {limit}"
    if p_value is not None and p_value >= ALPHA:
        return "unchanged", f"{moved}: within the noise of the samples (p >= {ALPHA:g})"
    if worse:
        return "regressed", f"{moved}: worse by more than {limit}"
    return "improved", f"{moved}: better by more than {limit}"


def _not_comparable(before: Check | None, after: Check | None) -> str | None:
    """Why the two checks cannot be compared, or None when they can."""
    if after is None:
        return "not in this run"
    if before is None:
        return "new in this run: not in the baseline"
    for check, where in ((after, "this run"), (before, "the baseline")):
        if check.value is None or not math.isfinite(check.value):
            return f"nothing measured in {where} ({check.status})"
        if check.status == "error":
            return f"an error in {where}"
        if check.status == "skip" and not is_unjudged(check):
            return f"skipped in {where}"
        if check.evidence.get("censored"):
            return f"a lower bound in {where} (the check was cut short)"
    if before.stat != after.stat:
        return f"{after.stat} in this run, {before.stat} in the baseline"
    try:
        convert(1.0, before.unit, after.unit)
    except ValueError:
        return f"measured in {after.unit} in this run, {before.unit} in the baseline"
    return None


def _badness(value: float, target: CheckTarget) -> float:
    """How bad ``value`` is by ``target``'s measure: larger is worse."""
    if target.op in ("<", "<="):
        return value
    if target.op in (">", ">="):
        return -value
    return abs(value - target.value)


def _pct(then: float, now: float) -> float:
    """The move from ``then`` to ``now`` in % of |then| (infinite from 0 to another)."""
    if then == 0:
        return 0.0 if now == 0 else math.copysign(math.inf, now)
    return (now - then) / abs(then) * 100


def _signed_pct(pct: float) -> str:
    if math.isinf(pct):
        return "from 0"
    return f"{'+' if pct >= 0 else ''}{fmt_number(pct)} %"


def _p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def mann_whitney_p(x: list[float], y: list[float]) -> float:
    """The two-sided p-value of the Mann-Whitney U test that ``x`` and ``y`` come from the
    same distribution: the normal approximation with the tie correction and a continuity
    correction, as scipy.stats.mannwhitneyu(method="asymptotic"). 1.0 when every value is
    the same. Raises ValueError when either is empty."""
    if not x or not y:
        raise ValueError("the Mann-Whitney test needs samples on both sides")
    n1, n2 = len(x), len(y)
    pooled = [*x, *y]
    n = n1 + n2
    order = sorted(range(n), key=pooled.__getitem__)
    values = [pooled[i] for i in order]
    ranks = [0.0] * n
    ties = 0.0
    start = 0
    while start < n:
        end = start
        while end + 1 < n and values[end + 1] == values[start]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        run = end - start + 1
        ties += run**3 - run
        start = end + 1
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    spread = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    if spread == 0:
        return 1.0
    z = max(abs(u1 - mean) - 0.5, 0.0) / spread
    return min(1.0, math.erfc(z / math.sqrt(2)))
