"""The JUnit XML report: one ``<testcase>`` per check, in the shape CI parsers read.

The layout is the common denominator of Jenkins (junit plugin), GitLab, junitparser and
pytest's own ``xunit2`` output::

    <testsuites name tests failures errors time>
      <testsuite name tests failures errors skipped time timestamp hostname>
        <properties><property name value/>...</properties>     run info
        <testcase classname name time>
          <failure message type>...</failure>     status fail
          <error message type>...</error>         status error
          <skipped message/>                      status skip
          <system-out>...</system-out>            value, target and evidence
        </testcase>

One suite per run, so a parser that reads only the first ``<testsuite>`` still gets every
count of the run's checks (``skipped`` is on the suite only: Jenkins xUnit's junit-10.xsd
allows it nowhere else). A comparison with a baseline, when given, is a second suite,
``devicelab.baseline``: a testcase per check, a ``<failure type="Regressed">`` for each
that regressed and ``<skipped>`` for each not compared; the root's counts add both.
A run stopped before its end says so in the suite's ``<system-out>`` and in one more
testcase, ``devicelab.run`` ``unfinished``, with an ``<error>``: CI reads the counts, and
``tests="0" errors="0"`` of a run stopped before its first check read as green.
``classname`` is ``devicelab.<kind>.<category>`` so Jenkins groups the checks by
category. A check has no duration of its own: ``time`` is its evidence's ``duration_s``
when present, else 0; the suite's ``time`` is the run's wall time (a stopped run: as far
as its series and checks got). Times are clamped to 0..1e9 s, three decimals.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from devicelab.models import Check, Results
from devicelab.report._common import (
    XML_ILLEGAL,
    check_line,
    check_target_label,
    clip_lists,
    count_text,
    duration_s,
    fmt_judged,
    mask_secrets,
    redacted,
    run_subtitle,
    scalar_text,
    truncate,
    verdict_text,
)
from devicelab.report.compare import CheckChange, Comparison

__all__ = ["render_junit"]


def _x(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids (a control byte in evidence would
    make the whole file unreadable to every parser)."""
    # A carriage return is legal XML but every parser turns it into a newline anyway.
    return XML_ILLEGAL.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))


#: The longest time written (about 31 years): a bigger one is a broken clock, and 1e308
#: written out would be 309 digits.
_MAX_SECONDS = 1e9


def _seconds(value: float | None) -> str:
    value = value or 0.0
    if not math.isfinite(value):
        value = _MAX_SECONDS if value > 0 else 0.0
    return f"{min(_MAX_SECONDS, max(0.0, value)):.3f}"


def _timestamp(results: Results) -> str:
    # JUnit schemas want a local-less ISO 8601 time: give it in UTC, without an offset.
    started = results.run.started_at
    if started.tzinfo is not None:
        try:
            started = started.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # within hours of year 1 or 9999: UTC is beyond datetime
            started = datetime.min if started.year == datetime.min.year else datetime.max
    return started.isoformat(timespec="seconds")


def _check_time(check: Check) -> float:
    duration = check.evidence.get("duration_s")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        # An integer beyond the float range is no duration; _seconds clamps the rest.
        return (
            _MAX_SECONDS
            if isinstance(duration, int) and duration > _MAX_SECONDS
            else float(duration)
        )
    return 0.0


def _run_time(results: Results) -> float:
    """The run's wall time; a run stopped before its end has none, so as far as it got:
    its last series point or the checks' own durations, whichever is longer."""
    took = duration_s(results.run)
    if took is not None:
        return took
    reached = [s.t[-1] for s in results.series if s.t and math.isfinite(s.t[-1])]
    return max([sum(map(_check_time, results.checks)), *reached])


def _num(value: float) -> str:
    # Properties carry the exact number, not the rounded text the reports show.
    return str(int(value)) if float(value).is_integer() else repr(value)


def _properties(results: Results) -> list[tuple[str, str]]:
    run = results.run
    props = [
        ("devicelab.schema", results.schema_),
        ("devicelab.version", run.devicelab_version),
        ("run.id", run.id),
        ("run.kind", run.kind),
        ("run.started_at", run.started_at.isoformat()),
    ]
    if run.finished_at is not None:
        props.append(("run.finished_at", run.finished_at.isoformat()))
    else:
        props.append(("run.finished", "no: stopped before its plan was through"))
    if run.device is not None:
        for name in ("id", "platform", "model", "os"):
            props.append((f"device.{name}", str(getattr(run.device, name))))
    if run.network is not None:
        net = run.network
        props.append(("network.name", net.name))
        for name in ("rtt_ms", "down_kbps", "up_kbps", "loss_pct"):
            value = getattr(net, name)
            if value is not None:
                props.append((f"network.{name}", _num(value)))
        if net.achieved is not None:
            for name, value in net.achieved.model_dump().items():
                if value is not None:
                    props.append((f"network.achieved.{name}", _num(value)))
        props.extend(("network.off_profile", line) for line in net.off_profile())
    if run.backend is not None:
        props.append(("backend.kind", run.backend.kind))
        props.append(("backend.url", str(mask_secrets(run.backend.url))))
    return props


def _evidence_text(evidence: dict[str, Any]) -> str:
    lines = []
    for key, value in mask_secrets(evidence).items():
        if isinstance(value, dict | list):
            text = json.dumps(clip_lists(value), default=str, ensure_ascii=False)
            lines.append(f"  {key}: {truncate(text, 2000)}")
        else:
            lines.append(f"  {key}: {scalar_text(value, 2000)}")
    return "\n".join(lines)


def _system_out(check: Check) -> str:
    lines = [
        f"{check.id}: {check.status}",
        f"value: {check_line(check) if check.value is not None else '—'}",
        f"stat: {check.stat}",
        f"target: {check_target_label(check.target)}",
    ]
    if check.target is not None:
        lines.append(f"target row: {check.target.source}")
    if check.summary is not None:
        st = check.summary
        stats = ", ".join(
            f"{name} {fmt_judged(getattr(st, name), check.unit, check.target)}"
            for name in ("min", "p50", "p95", "max", "mean")
        )
        lines.append(f"samples: {count_text(len(check.samples), 'sample')} ({stats})")
    if check.reason:
        lines.append(f"reason: {mask_secrets(check.reason)}")
    if check.evidence:
        lines += ["evidence:", _evidence_text(check.evidence)]
    return "\n".join(lines) + "\n"


def _testcase(results: Results, check: Check) -> ET.Element:
    case = ET.Element(
        "testcase",
        {
            "classname": _x(f"devicelab.{results.run.kind}.{check.category}"),
            "name": _x(check.id),
            "time": _seconds(_check_time(check)),
        },
    )
    reason = _x(str(mask_secrets(check.reason)))
    if check.status == "fail":
        message = reason or f"{check_line(check)}: target missed"
        child = ET.SubElement(case, "failure", {"message": message, "type": "TargetMissed"})
        child.text = _x(f"{mask_secrets(check.title)}: {check_line(check)}")
    elif check.status == "error":
        message = reason or "the check could not run"
        child = ET.SubElement(case, "error", {"message": message, "type": "CheckError"})
        child.text = _x(f"{mask_secrets(check.title)}: {message}")
    elif check.status == "skip":
        ET.SubElement(case, "skipped", {"message": reason or "skipped"})
    out = ET.SubElement(case, "system-out")
    out.text = _x(_system_out(check))
    return case


def _unfinished(results: Results) -> ET.Element:
    """The testcase that makes a run stopped before its end an error for CI."""
    case = ET.Element("testcase", {"classname": "devicelab.run", "name": "unfinished",
                                   "time": _seconds(_run_time(results))})  # fmt: skip
    had = len(results.checks)
    message = (
        f"the run did not finish: stopped before its plan was through, with "
        f"{had} check{'' if had == 1 else 's'}"
    )
    child = ET.SubElement(case, "error", {"message": message, "type": "RunUnfinished"})
    child.text = _x(f"devicelab: {verdict_text(results)}.")
    return case


def _compared_case(change: CheckChange) -> ET.Element:
    """The testcase of one check's comparison with the baseline."""
    case = ET.Element("testcase", {"classname": "devicelab.baseline",
                                   "name": _x(change.name), "time": "0.000"})  # fmt: skip
    why = _x(str(mask_secrets(change.why)))
    if change.verdict == "regressed":
        child = ET.SubElement(case, "failure", {"message": why, "type": "Regressed"})
        child.text = _x(f"{mask_secrets(change.title)}: {why}")
    elif change.verdict == "not compared":
        ET.SubElement(case, "skipped", {"message": why or "not compared"})
    else:
        ET.SubElement(case, "system-out").text = f"{change.verdict}: {why}"
    return case


def _comparison_suite(comparison: Comparison, timestamp: str) -> ET.Element:
    """The ``devicelab.baseline`` testsuite: one testcase per compared check."""
    changes = comparison.changes
    suite = ET.Element("testsuite", {
        "name": "devicelab.baseline", "tests": str(len(changes)),
        "failures": str(len(comparison.regressed)), "errors": "0",
        "skipped": str(len(comparison.having("not compared"))),
        "time": "0.000", "timestamp": timestamp, "hostname": "baseline", "id": "1",
    })  # fmt: skip
    props = ET.SubElement(suite, "properties")
    base = comparison.baseline
    for name, value in (
        ("baseline.run.id", base.id),
        ("baseline.devicelab.version", base.devicelab_version),
        ("baseline.run.title", run_subtitle(base)),
        ("threshold_pct", f"{comparison.threshold_pct:g}"),
    ):
        ET.SubElement(props, "property", {"name": name, "value": _x(str(mask_secrets(value)))})
    for change in changes:
        suite.append(_compared_case(change))
    notes = [comparison.counts_text(), *comparison.notes]
    ET.SubElement(suite, "system-out").text = _x(str(mask_secrets("\n".join(notes))) + "\n")
    return suite


def render_junit(results: Results, *, comparison: Comparison | None = None) -> str:
    """The JUnit XML text of ``results`` (UTF-8 declaration, ends with a newline).

    Counts on ``<testsuites>`` and ``<testsuite>`` match the checks' statuses, plus one
    error testcase for a run that did not finish. ``comparison`` adds the baseline's
    suite, its regressions as failures (counted on ``<testsuites>`` too). Raises nothing
    for valid Results.
    """
    results = redacted(results)
    s = results.summary
    unfinished = results.run.finished_at is None
    counts = {
        "tests": str(len(results.checks) + unfinished),
        "failures": str(s.fail),
        "errors": str(s.error + unfinished),
        "time": _seconds(_run_time(results)),
    }
    totals = dict(counts)
    if comparison is not None:
        totals["tests"] = str(int(counts["tests"]) + len(comparison.changes))
        totals["failures"] = str(s.fail + len(comparison.regressed))
    root = ET.Element("testsuites", {"name": "devicelab", **totals})
    device = results.run.device
    where = f".{device.id}" if device is not None else ""
    network = f".{results.run.network.name}" if results.run.network is not None else ""
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": _x(f"devicelab.{results.run.kind}{where}{network}"),
            **counts,
            "skipped": str(s.skip),
            "timestamp": _timestamp(results),
            "hostname": _x(device.id if device is not None else "backend"),
            "id": "0",
        },
    )
    props = ET.SubElement(suite, "properties")
    for name, value in _properties(results):
        ET.SubElement(props, "property", {"name": _x(name), "value": _x(value)})
    props_run = ET.SubElement(props, "property")
    props_run.set("name", "run.title")
    props_run.set("value", _x(run_subtitle(results.run)))
    for check in results.checks:
        suite.append(_testcase(results, check))
    if unfinished:
        suite.append(_unfinished(results))
        # The verdict in words too: the schema's place for them is here.
        verdict = ET.SubElement(suite, "system-out")
        verdict.text = _x(f"devicelab: {verdict_text(results)}.\n")
    if comparison is not None:
        root.append(_comparison_suite(comparison, _timestamp(results)))
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
