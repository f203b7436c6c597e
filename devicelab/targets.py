"""Judging measurements against the story's targets (profiles/targets.yaml).

The rule of DESIGN.md: a network column applies when the network is shaped (4g -> the
story's 4G column, wifi -> WiFi, slow-3g/fast-3g -> 3G, as each profile's
``story_column`` says); with no shaping the platform's own column applies (web -> Web
(Desktop), android/ios -> WiFi). Among the rows that match, the most specific wins, and
the check names the row it used (``CheckTarget.source`` and ``column``).
"""

from __future__ import annotations

import functools
from typing import Any

from devicelab.errors import ConfigError
from devicelab.models import Check, CheckTarget, NetworkProfile, Target, TargetBook, summarize
from devicelab.numbers import check_target_label, fmt_judged

__all__ = [
    "MATRIX_COLUMNS",
    "STORY_MATRIX",
    "UNITS",
    "backend_target",
    "cell",
    "check_unit",
    "column_for",
    "convert",
    "judge",
    "known_checks",
    "resolve",
]

#: The rows of the story's "Performance Targets by Platform" table: (check id, row title).
STORY_MATRIX: list[tuple[str, str]] = [
    ("message_delivery", "Message Delivery (Realtime)"),
    ("conversation_list_load", "Conversation List Load"),
    ("message_search", "Message Search"),
    ("image_upload_1mb", "Image Upload (1MB)"),
    ("image_download_1mb", "Image Download (1MB)"),
    ("reconnect", "Reconnect After Disconnect"),
    ("local_cache_query_50", "Local Cache Query (50 msgs)"),
    ("memory_100_conversations", "Memory Usage (100 convos)"),
    ("battery_drain", "Battery Drain (1 hour)"),
]

#: The columns of that table: (column id, title).
MATRIX_COLUMNS: list[tuple[str, str]] = [
    ("web", "Web (Desktop)"),
    ("wifi", "iOS/Android (WiFi)"),
    ("4g", "iOS/Android (4G)"),
]

_SCALE = {("ms", "s"): 0.001, ("s", "ms"): 1000.0}

#: The units a targets.yaml row may give: the ones the checks measure in (ms and s convert
#: into each other, :func:`check_unit`) and the counts the backend checks count. A row in
#: another (``msec``) was refused only after its check had measured, the value lost.
UNITS: frozenset[str] = frozenset(
    {unit for pair in _SCALE for unit in pair}
    | {"MB", "MB_per_min", "%", "pct_per_hour"}
    | {"users", "scans", "indexes", "problems"}
)


@functools.cache
def known_checks() -> frozenset[str]:
    """Every check id a targets.yaml row may name: the device scenarios' and the backend
    checks' (DESIGN.md's lists, as the code that runs them keeps them). A row of any other
    was passed over: its check ran unjudged. Raises ConfigError for a broken query file."""
    # Imported here: both run above this module (they judge with it).
    from backend_checks.check import check_ids as backend_ids
    from devicelab.scenarios import check_ids as device_ids

    return frozenset(device_ids()) | frozenset(backend_ids())


def column_for(platform: str, network: NetworkProfile | None) -> str:
    """The story column a run on ``platform`` through ``network`` is judged in.

    ``network`` None or unshaped: web -> "web", phones -> "wifi"; a shaped profile with a
    ``story_column`` -> that column; a shaped profile without one (5g) -> the platform's
    own column. ``platform`` "backend" -> "any".
    """
    if platform == "backend":
        return "any"
    own = "web" if platform == "web" else "wifi"
    if network is None or not network.shaped or network.offline:
        return own
    return network.story_column or own


def _platform_matches(row: Target, platform: str) -> bool:
    if row.platform == "any":
        return platform != "backend"
    if row.platform == "mobile":
        return platform in ("android", "ios")
    return row.platform == platform


def resolve(book: TargetBook, check: str, platform: str, column: str) -> Target | None:
    """The most specific target row for ``check`` on ``platform`` in ``column``, or None.

    A row with ``applies: false`` is returned too (an N/A cell): the caller skips the check.
    """
    best: Target | None = None
    for row in book.targets:
        if row.check != check or not _platform_matches(row, platform):
            continue
        if row.column not in ("any", column):
            continue
        if best is None or row.specificity() > best.specificity():
            best = row
    return best


def cell(book: TargetBook, check: str, column: str, platform: str | None = None) -> Target | None:
    """The target in one cell of the story's matrix.

    ``platform`` defaults to the column's own platform (web for "web", a phone otherwise).
    """
    if platform is None:
        platform = "web" if column == "web" else "android"
    return resolve(book, check, platform, column)


def backend_target(
    check: str, book: TargetBook | None = None, *, source: str = "the given targets"
) -> CheckTarget:
    """The backend row of ``check`` (profiles/targets.yaml unless ``book``, read from the
    file ``source`` names) as a CheckTarget.

    Raises ConfigError (exit 2) when the file is wrong, or when the book has no backend
    row with a value for ``check`` (a user's own targets.yaml may leave one out): the
    message names the file and the check, the hint the row to add.
    """
    if book is None:
        from devicelab.config import find_file, load_targets

        path = find_file("profiles/targets.yaml")
        book, source = load_targets(path), str(path)
    row = resolve(book, check, "backend", "any")
    if row is None or row.value is None:
        what = "no backend target" if row is None else "a backend row without a value"
        raise ConfigError(
            f"{source}: {what} for {check}",
            hint=f"add a backend row for {check} to profiles/targets.yaml (platform: backend,"
            " op, value, unit, source), as the shipped file has",
        )
    return CheckTarget(op=row.op, value=row.value, unit=row.unit, source=row.source)


def convert(value: float, unit: str, to: str) -> float:
    """``value`` in ``unit`` expressed in ``to`` (ms <-> s). Raises ValueError for units
    that do not convert."""
    if unit == to:
        return value
    factor = _SCALE.get((unit, to))
    if factor is None:
        raise ValueError(f"cannot compare {unit} with {to}")
    return value * factor


def check_unit(
    check: str, row_unit: str, measured_unit: str, *, path: str = "targets.yaml"
) -> None:
    """Refuse a targets.yaml row of ``check`` whose unit cannot be compared with what the
    check measures (``measured_unit``; ms and s convert); ``path`` names the file read.
    Raises ConfigError (exit 2)."""
    if row_unit != measured_unit and (measured_unit, row_unit) not in _SCALE:
        other = {"ms": " (or s)", "s": " (or ms)"}.get(measured_unit, "")
        raise ConfigError(
            f"{path}: the {check} row's unit {row_unit!r} cannot be compared with what"
            f" {check} measures ({measured_unit})",
            hint=f"give that row unit: {measured_unit}{other}",
        )


def judge(
    *,
    check: str,
    title: str,
    category: str,
    target: Target | None,
    samples: list[float] | None = None,
    value: float | None = None,
    unit: str,
    stat: str | None = None,
    column: str | None = None,
    evidence: dict[str, Any] | None = None,
    reason: str = "",
) -> Check:
    """A judged Check from measured ``samples`` (or one ``value``) in ``unit``.

    Samples are converted to the target's unit (ms <-> s); the stat the target names
    (p50, p95, max, mean) is taken from them. No target: status "skip" (not judged) with
    the value and a reason that says it is reported without a verdict. An N/A target:
    "skip". Nothing measured: "error". Raises ConfigError (exit 2) when the target's unit
    cannot be compared with ``unit`` (a user's targets.yaml row in other units).
    """
    evidence = dict(evidence or {})
    if target is not None and not target.applies:
        return Check(
            id=check,
            title=title,
            category=category,
            status="skip",
            unit=unit,
            reason=f"N/A here: {target.source}",
            evidence=evidence,
        )
    judged = target is not None and target.value is not None
    if target is not None and judged and unit != target.unit:
        check_unit(check, target.unit, unit)
        samples = [convert(v, unit, target.unit) for v in samples or []]
        value = None if value is None else convert(value, unit, target.unit)
        unit = target.unit
    samples = list(samples or [])
    stats = summarize(samples)
    chosen = stat or (target.stat if target is not None else ("p95" if samples else "value"))
    measured = value
    if stats is not None and (measured is None or chosen != "value"):
        measured = float(getattr(stats, chosen if chosen != "value" else "p50"))
    check_target = None
    if measured is None:
        status, text = "error", reason or "nothing was measured"
    elif target is None or target.value is None:
        # Not judged: a "pass" here counted in the summary, the exit code and JUnit as a
        # verdict the story never gave. The value is kept.
        status = "skip"
        text = reason or "the story sets no target here: value reported without a verdict"
    else:
        held = target.holds(measured)
        status = "pass" if held else "fail"
        verdict = "meets" if held else "misses"
        check_target = CheckTarget(
            op=target.op, value=target.value, unit=target.unit, source=target.source, column=column
        )
        # In the reports' units and digits: "p95 210.7 ms misses < 200 ms", "0.8 MB/min".
        shown = fmt_judged(measured, unit, check_target)
        bound = check_target_label(check_target)
        text = reason or f"{chosen} {shown} {verdict} {bound}"
    return Check.model_validate(
        {
            "id": check,
            "title": title,
            "category": category,
            "status": status,
            "value": measured,
            "unit": unit,
            "stat": chosen,
            "target": check_target,
            "samples": samples,
            "summary": stats,
            "reason": text,
            "evidence": evidence,
        }
    )
