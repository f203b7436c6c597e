"""What every report writer shares: number and unit text, run titles, evidence text (the
secret masking is in ``masking``, re-exported here).

Reports are made from a results.json alone, so everything here is pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from devicelab.models import Check, IndexRecommendation, Results, RunInfo
from devicelab.numbers import (
    check_target_label,
    fmt_judged,
    fmt_number,
    fmt_value,
    target_label,
    unit_text,
)
from devicelab.report.masking import MASK, is_secret_key, mask_secrets, redacted, showable

__all__ = [
    "MASK",
    "MAX_ITEMS",
    "STATUS_ICON",
    "STATUS_WORD",
    "UNFINISHED",
    "XML_ILLEGAL",
    "check_line",
    "check_target_label",
    "clip_lists",
    "count_text",
    "defang",
    "duration_s",
    "fmt_judged",
    "fmt_number",
    "fmt_value",
    "is_flat_dict",
    "is_pytest_session",
    "is_record_list",
    "is_scalar_list",
    "is_secret_key",
    "is_unjudged",
    "list_text",
    "mask_secrets",
    "recommendations",
    "redacted",
    "run_subtitle",
    "scalar_text",
    "showable",
    "target_label",
    "truncate",
    "unit_text",
    "verdict_text",
]

STATUS_ICON = {"pass": "✅", "fail": "❌", "skip": "⏭", "error": "⚠"}
STATUS_WORD = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}
#: The same and tab and newline: for text that must stay on one line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
#: Characters XML 1.0 does not allow, even escaped (and the C1 block, which it does
#: allow but a terminal acts on).
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


#: Where a run's end would be, when it has none: stopped (Ctrl-C, an error) before its
#: plan was through; the checks listed are the ones it got to.
UNFINISHED = "no: the run stopped before its plan was through (these are the checks it got to)"


def defang(text: str) -> str:
    """``text`` with every ``scheme://`` written ``scheme[:]//``: readable, never a link,
    and never an ``http://`` or ``https://`` substring."""
    # Every "://", whatever precedes it: linear, and nothing a linker could take is left.
    return text.replace("://", "[:]//")


def count_text(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless there is one: "1 check", "3 samples"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def check_line(check: Check) -> str:
    """One line saying what was measured against what: "p95 612 ms vs target < 500 ms";
    a value that is no number (NaN, infinity) says it was not measured."""
    if check.value is not None and not math.isfinite(check.value):
        measured = f"not measured ({fmt_number(check.value)})"
    else:
        measured = fmt_judged(check.value, check.unit, check.target)
    stat = f"{check.stat} " if check.value is not None and check.stat != "value" else ""
    text = f"{stat}{measured}"
    if check.target is not None:
        text += f" vs target {check_target_label(check.target)}"
    return text


def is_unjudged(check: Check) -> bool:
    """Whether ``check`` was measured but judged against nothing: a skip with a number and
    no target (the story sets none for this platform and network), its value kept."""
    # targets.judge gives a skip a value only when there was no target to judge it by; a
    # skip that did not run (N/A, not built, no power cut) has no value.
    return (
        check.status == "skip"
        and check.target is None
        and check.value is not None
        and math.isfinite(check.value)
    )


def measured_text(check: Check) -> str:
    """What a check measured, for a terminal line: "p95 612 ms (target < 500 ms, column
    4g)", ">= " before a lower bound (evidence.censored), the units and digits of the
    reports; its reason when nothing was measured, and after the value of a skip (a
    measured check with no target says why it has no verdict). Control characters are
    replaced."""
    if check.value is None:
        return showable(check.reason)
    at_least = ">= " if check.evidence.get("censored") else ""
    text = f"{check.stat} {at_least}{fmt_judged(check.value, check.unit, check.target)}"
    if (t := check.target) is not None:
        text += f" (target {check_target_label(t)}" + (f", column {t.column})" if t.column else ")")
    if check.status == "skip" and check.reason:
        # A bare value on a SKIP line read as a check that ran and was then thrown away.
        text += f" — {check.reason}"
    return showable(text)


def run_subtitle(run: RunInfo, quote: Callable[[str], str] | None = None) -> str:
    """What ran where, on one line: kind, device, network and backend of the run. The
    run's own text (device id, model, OS, network name: the device reports some of it
    itself) is on one line, secrets masked, and passed through ``quote`` when given (the
    Markdown report escapes it)."""

    def text(value: str) -> str:
        shown = str(mask_secrets(value)).replace("\n", " ").replace("\r", " ").replace("\t", " ")
        return quote(shown) if quote is not None else shown

    parts = [f"{run.kind} run"]
    if run.device is not None:
        d = run.device
        parts.append(f"device {text(d.id)} ({d.platform}, {text(d.model)}, {text(d.os)})")
    if run.network is not None:
        parts.append(f"network {text(run.network.name)}")
    if run.backend is not None:
        parts.append(f"backend {run.backend.kind}")
    return " · ".join(parts)


def is_pytest_session(results: Results) -> bool:
    """Whether ``results`` are a pytest session's (the ``devicelab_lab`` fixture): its
    checks name the test that measured them (``evidence.test``). A session stopped before
    its first check cannot be told from a run."""
    return any(isinstance(c.evidence.get("test"), str) for c in results.checks)


#: Whose exit code a pytest session's summary speaks of: pytest's, not the checks'.
PYTEST_EXIT = (
    "the exit code is pytest's, which reflects the tests too: 1 when a test failed, by an "
    "assertion of its own or on a check, 2 when the session was stopped"
)


def verdict_text(results: Results) -> str:
    """What the run's checks add up to, without a final period: "all checks passed (exit
    code 0)"; for a run stopped before its end (no ``finished_at``), that it is
    unfinished first, since a stopped run never exits 0 however its checks went. A pytest
    session's (:func:`is_pytest_session`) names pytest's exit code instead: the tests'."""
    code = results.exit_code()
    pytest_session = is_pytest_session(results)
    if results.run.finished_at is None:
        among = {0: "none failed", 1: "a check failed", 3: "a check could not run"}[code]
        if pytest_session:
            return (
                "unfinished: the pytest session was stopped before its tests were through "
                "(a stopped pytest session exits 2, pytest's code for an interrupted one); "
                f"of the checks it got to, {among}"
            )
        return (
            "unfinished: the run was stopped before its plan was through (a stopped run "
            "never exits 0: 130, 143 or 129 after Ctrl-C, SIGTERM or SIGHUP, 3 when a peer "
            f"could not start or a device went away); of the checks it got to, {among}"
        )
    exit_code = PYTEST_EXIT if pytest_session else f"exit code {code}"
    if code == 0 and results.summary.skip:
        unjudged = sum(1 for c in results.checks if is_unjudged(c))
        if unjudged:
            return f"{_unjudged_verdict(results, unjudged)} ({exit_code})"
        # "All checks passed" said so of a run whose checks were all skipped.
        passed = "every check that ran passed" if results.summary.pass_ else "no check ran"
        return f"{passed}, {results.summary.skip} skipped ({exit_code})"
    if not results.checks:  # "all checks passed" would be true only vacuously
        return "no check ran (exit code 0)"
    verdict = {0: "all checks passed", 1: "a check failed", 3: "a check could not run"}[code]
    return f"{verdict} ({exit_code})"


def _unjudged_verdict(results: Results, unjudged: int) -> str:
    # "No check ran" was said of checks that ran and were measured: the story just sets no
    # target for them here, so they count as neither passed nor not run.
    judged = results.summary.pass_
    where = "this device and network" if results.run.device is not None else "them"
    parts = [
        f"every judged check passed ({judged} judged)" if judged else "0 judged",
        f"{unjudged} measured without a target (the story sets none for {where})",
    ]
    if not judged:
        parts.reverse()
    not_run = results.summary.skip - unjudged
    if not_run:
        parts.append(f"{not_run} skipped without running")
    return ", ".join(parts)


def duration_s(run: RunInfo) -> float | None:
    """Seconds from the run's start to its end, or None when it has no end."""
    if run.finished_at is None:
        return None
    return max(0.0, (run.finished_at - run.started_at).total_seconds())


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… (+{len(text) - limit} chars)"


def scalar_text(value: Any, limit: int | None = 300) -> str:
    """A scalar (or anything) as one line of text, cut to ``limit`` characters (None:
    whole)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return fmt_number(value)
    if isinstance(value, str):
        text = value
    elif isinstance(value, int):
        text = str(value)
    else:
        text = json.dumps(value, default=str, ensure_ascii=False)
    text = _CONTROL.sub("\ufffd", text.replace("\r", " ").replace("\n", " ⏎ ").replace("\t", " "))
    return text if limit is None else truncate(text, limit)


#: How much of an evidence list a report shows before it says how many were left out.
MAX_ITEMS = 20


def is_flat_dict(value: Any) -> bool:
    """A dict whose values are all scalars (a small two-column table)."""
    return isinstance(value, dict) and all(
        v is None or isinstance(v, str | int | float | bool) for v in value.values()
    )


def is_record_list(value: Any) -> bool:
    """A non-empty list of flat dicts (a table with one row per item)."""
    return isinstance(value, list) and bool(value) and all(is_flat_dict(v) for v in value)


def is_scalar_list(value: Any) -> bool:
    """A list of scalars (one line, truncated)."""
    return isinstance(value, list) and all(
        v is None or isinstance(v, str | int | float | bool) for v in value
    )


def list_text(items: list[Any], limit: int = MAX_ITEMS) -> str:
    """A list of scalars on one line, the first ``limit`` items and how many more."""
    shown = ", ".join(scalar_text(v, 80) for v in items[:limit])
    more = f" … (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"[{shown}]{more}"


def clip_lists(value: Any, limit: int = MAX_ITEMS) -> Any:
    """``value`` with every list cut to ``limit`` items plus a "(+N more)" marker."""
    if isinstance(value, dict):
        return {k: clip_lists(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        head = [clip_lists(v, limit) for v in value[:limit]]
        if len(value) > limit:
            head.append(f"… (+{len(value) - limit} more)")
        return head
    if isinstance(value, str):
        return truncate(value, 2000)
    return value


def recommendations(results: Results) -> list[IndexRecommendation]:
    """The index suggestions of every check (a backend run's ``evidence.suggestions``),
    once each by DDL, proven ones first; each with ``checks``, the ids that reported it,
    and ``why``, its proof without the "unproven: " its verdict already says. Reports put
    them near the top: they are what a reader acts on. Raises nothing (an item that is
    not a suggestion is passed over)."""
    first: dict[str, dict[str, Any]] = {}
    carriers: dict[str, list[Check]] = {}
    for check in results.checks:
        # Masked first: the reports print these fields, and any of them may hold anything.
        items = mask_secrets(check.evidence.get("suggestions")) if check.evidence else None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or not isinstance(item.get("ddl"), str):
                continue
            first.setdefault(item["ddl"], item)
            carriers.setdefault(item["ddl"], []).append(check)
    found = []
    for ddl, item in first.items():
        checks = carriers[ddl]
        # Every backend check's evidence carries all suggestions: the ones that reported
        # it are those that did not pass (a passing seq_scans did not).
        failing = [c.id for c in checks if c.status != "pass"]
        queries = item.get("queries")
        found.append(
            IndexRecommendation(
                ddl=ddl,
                proven=bool(item.get("proven")),
                why=scalar_text(item.get("proof") or "", 300).removeprefix("unproven: "),
                queries=[scalar_text(q, 80) for q in queries] if isinstance(queries, list) else [],
                checks=failing or [c.id for c in checks],
            )
        )
    return sorted(found, key=lambda e: not e.proven)
