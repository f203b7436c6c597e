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
a lower bound (a check cut short), another statistic or units that do not convert, or
measured on another link than its counterpart. Pure: no I/O; the renderers and
``devicelab report --baseline`` show it.

A check id measured more than once in a run (a pytest session's ``measure``, once per
test, or again on a link the test switched or cut: ``evidence.link_profile``,
``evidence.link_offline``) has a row per measurement. Measurements are paired by their
link (the run's network unless the test switched it) and, within one link, the test that
measured them (``evidence.test``), then in the run's order; one left without a
counterpart on its link is named, never judged against a measurement on another link.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable
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
    Mann-Whitney p of the two runs' samples when both had enough. ``nth`` is the
    measurement's place among its id's in this run (in the baseline for one only there),
    0 when the id was measured once in each run; ``link`` the link it ran on when a test
    switched or cut it ("" on the run's own network)."""

    id: str
    title: str
    before: Check | None
    after: Check | None
    verdict: Verdict
    why: str
    moved: str = ""
    change_pct: float | None = None
    p_value: float | None = None
    nth: int = 0
    link: str = ""

    @property
    def name(self) -> str:
        """The check id, with its measurement's place when the id repeats:
        ``message_delivery #2``."""
        return f"{self.id} #{self.nth}" if self.nth else self.id


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
    # A pytest session may measure one id several times (once per test, on a switched
    # link): every measurement is a row, none dropped for the last of its id.
    before = _measurements(baseline)
    after = _measurements(results)
    ids = list(after) + [i for i in before if i not in after]
    changes: list[CheckChange] = []
    notes = _differences(results.run, baseline.run)
    for check_id in ids:
        then, now = before.get(check_id, []), after.get(check_id, [])
        for old, new in _paired(then, now):
            change = _measured_change(check_id, old, new, then, now, threshold_pct)
            changes.append(change)
            if _by_link(old, new, then, now):  # differs by design: said at the top too
                notes.append(f"{change.name}: {change.why}")
    changes.sort(key=lambda c: _ORDER[c.verdict])  # stable: each group in run order
    return Comparison(
        baseline=baseline.run, threshold_pct=threshold_pct, changes=changes, notes=notes
    )


@dataclass(frozen=True)
class _Measured:
    """One measurement of a check id in a run: its place among the id's, the link it ran
    on (``switched``: a test switched or cut it) and the test that measured it."""

    check: Check
    nth: int
    link: str
    switched: bool
    test: str | None


def _measurements(results: Results) -> dict[str, list[_Measured]]:
    """Each check id's measurements in ``results``, in the run's order."""
    network = results.run.network.name if results.run.network else "none"
    found: dict[str, list[_Measured]] = {}
    for check in results.checks:
        evidence = check.evidence
        profile = evidence.get("link_profile")
        link = profile if isinstance(profile, str) and profile else network
        if evidence.get("link_offline") is True:
            link = f"{link}, cut by the test"
        test = evidence.get("test") if isinstance(evidence.get("test"), str) else None
        same = found.setdefault(check.id, [])
        same.append(_Measured(check, len(same) + 1, link, link != network, test))
    return found


#: How two runs' measurements of one id are paired, most alike first: the same link and
#: test, the same link, then in the runs' order (judged only where no test moved the link).
_PAIRING: tuple[Callable[[_Measured], Hashable], ...] = (
    lambda m: (m.link, m.test),
    lambda m: m.link,
    lambda m: None,
)


def _paired(
    then: list[_Measured], now: list[_Measured]
) -> list[tuple[_Measured | None, _Measured | None]]:
    """The baseline's (``then``) and this run's (``now``) measurements of one id, paired
    (:data:`_PAIRING`), in this run's order, then the baseline's left over."""
    partner: dict[int, _Measured] = {}  # this run's nth -> the baseline's
    taken: set[int] = set()
    for key in _PAIRING:
        free: dict[Hashable, list[_Measured]] = {}
        for old in then:
            if old.nth not in taken:
                free.setdefault(key(old), []).append(old)
        for new in now:
            if new.nth in partner or not free.get(key(new)):
                continue
            old = free[key(new)].pop(0)
            partner[new.nth] = old
            taken.add(old.nth)
    pairs: list[tuple[_Measured | None, _Measured | None]] = [
        (partner.get(new.nth), new) for new in now
    ]
    return pairs + [(old, None) for old in then if old.nth not in taken]


def _by_link(
    old: _Measured | None, new: _Measured | None, then: list[_Measured], now: list[_Measured]
) -> bool:
    """Whether the link keeps a pair from being compared: one ran on a link a test switched
    or cut, and the other ran on another link, or is missing while its run measured the id
    (``then``, ``now``: every measurement of the id in each run) on other links only."""
    if old is not None and new is not None:
        return old.link != new.link and (old.switched or new.switched)
    if new is not None:
        return new.switched and bool(then)
    return old is not None and old.switched and bool(now)


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _links(measured: list[_Measured]) -> str:
    """The links ``measured`` ran on, each once, in order: "4g and slow-3g"."""
    links = list(dict.fromkeys(m.link for m in measured))
    return links[0] if len(links) == 1 else f"{', '.join(links[:-1])} and {links[-1]}"


def _measured_change(
    check_id: str,
    old: _Measured | None,
    new: _Measured | None,
    then: list[_Measured],
    now: list[_Measured],
    threshold_pct: float,
) -> CheckChange:
    """The comparison of one pair of measurements of ``check_id`` (either may be None),
    knowing every measurement of the id in each run (``then``, ``now``)."""
    shown = new or old
    assert shown is not None  # _paired pairs at least one side
    nth = shown.nth if len(then) > 1 or len(now) > 1 else 0
    link = next((m.link for m in (new, old) if m is not None and m.switched), "")
    before, after = (old.check if old else None), (new.check if new else None)
    if _by_link(old, new, then, now):
        if old is not None and new is not None:
            why = f"measured on {_where(new)} in this run, on {_where(old)} in the baseline"
        elif new is not None:
            why = f"measured on {_where(new)} in this run; the baseline measured it "
            why += f"{_times(len(then))}, on {_links(then)}"
        else:
            assert old is not None
            why = f"measured on {_where(old)} in the baseline; this run measured it "
            why += f"{_times(len(now))}, on {_links(now)}"
        why += ": another link, not comparable"
        return CheckChange(
            check_id, shown.check.title, before, after, "not compared", why, nth=nth, link=link
        )
    change = _change(check_id, before, after, threshold_pct)
    if old is None and then:  # the baseline has the id: each of its measurements paired
        why = f"new in this run: the baseline measured it {_times(len(then))}, each paired"
        change = dataclasses.replace(change, why=f"{why} with another of this run's")
    elif new is None and now:
        why = f"not in this run: it measured it {_times(len(now))}, each paired"
        change = dataclasses.replace(change, why=f"{why} with another of the baseline's")
    return dataclasses.replace(change, nth=nth, link=link)


def _where(measured: _Measured) -> str:
    """The link a measurement ran on, saying so when its test switched or cut it."""
    if measured.switched and not measured.link.endswith("cut by the test"):
        return f"{measured.link} (switched by the test)"
    return measured.link


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
