"""The Markdown report: run, summary, the story's target matrix, then every check.

Text that comes from a run (evidence, reasons) is shown inside code spans or fenced
blocks, a title in its heading with every active character escaped (``_plain``), so
Markdown renderers neither format it nor turn its URLs into links, and table cells escape
``|``. Secret-looking evidence keys are masked (see ``_common``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from devicelab.models import Check, Results, TargetBook
from devicelab.report._common import (
    STATUS_ICON,
    UNFINISHED,
    check_line,
    check_target_label,
    clip_lists,
    count_text,
    defang,
    duration_s,
    fmt_judged,
    fmt_number,
    fmt_value,
    is_flat_dict,
    is_record_list,
    is_scalar_list,
    list_text,
    mask_secrets,
    recommendations,
    redacted,
    run_subtitle,
    scalar_text,
    showable,
    truncate,
    unit_text,
    verdict_text,
)
from devicelab.report.compare import CheckChange, Comparison
from devicelab.report.matrix import build_matrix

__all__ = ["code_span", "render_markdown"]

_MAX_JSON = 4000


def _code(text: str) -> str:
    """``text`` as a code span, fenced with more backticks than it contains."""
    text = text.replace("\r", " ").replace("\n", " ")
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


#: ASCII punctuation a Markdown renderer may act on (HTML, links, images, emphasis,
#: entities, tables, e-mail autolinks): escaped with a backslash, which CommonMark shows
#: as the character.
#: An underscore inside a word formats nothing (check ids keep theirs bare).
_MD_ACTIVE = re.compile(r"[\\`*\[\]<>&!|#~@]|(?<!\w)_|_(?!\w)")
#: GFM links a bare "www." in text; "www\." shows the same and links nothing.
_WWW = re.compile(r"(?i)\b(www)\.")


#: Text a renderer leaves alone in running text and table cells: letters, digits and a
#: few signs, no ``_ * ` [ ] ! & | # ~ @`` (emphasis, links, entities, e-mail links),
#: no ``://`` or ``www.`` (autolinks), and ``<`` only before a space, a digit or ``=``
#: (never a tag). Our own lines ("p95 290.5 ms
#: vs target < 200 ms") stay plain; anything else from a run goes into a code span.
_INERT = re.compile(r"(?:[^\W_]|[ µ%/.,:;()·=+\-—–≤≥>✅❌⏭⚠]|<(?=[\s=\d]))*")


def _text(text: str) -> str:
    """``text`` plain when a renderer cannot act on it (``_INERT``), else a code span."""
    lowered = text.lower()
    if _INERT.fullmatch(text) and "://" not in lowered and "www." not in lowered:
        return text
    return _code(text)


def _plain(text: str) -> str:
    """Run text (a title, an id) as plain Markdown text on one line: secrets masked, every
    character a renderer could act on escaped, and no ``scheme://`` it could link."""
    shown = str(mask_secrets(text)).replace("\n", " ").replace("\r", " ")
    escaped = _MD_ACTIVE.sub(lambda m: "\\" + m.group(0), defang(shown))
    return _WWW.sub(r"\1\\.", escaped)


def code_span(text: str) -> str:
    """Run text as a code span that is safe in a table cell too (one line, ``|`` escaped,
    control characters as U+FFFD): for other Markdown files made from runs (farm.md)."""
    return _cell(_code(showable(text)))


def _cell(text: str) -> str:
    """``text`` safe inside a table cell (GFM needs ``\\|`` even inside code spans)."""
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _run_section(results: Results) -> list[str]:
    run = results.run
    rows = [["run id", _code(run.id)], ["kind", run.kind]]
    # Every field below but the times comes from the run (the device names its own model
    # and OS): code spans, so a renderer shows it as it is.
    rows.append(["started", run.started_at.isoformat()])
    if run.finished_at is not None:
        took = duration_s(run)
        rows.append(["finished", f"{run.finished_at.isoformat()} ({fmt_number(took or 0)} s)"])
    else:
        rows.append(["finished", UNFINISHED])
    rows.append(["devicelab", _code(run.devicelab_version)])
    if run.device is not None:
        d = run.device
        rows.append(["device", f"{_code(d.id)} — {d.platform}, {_code(d.model)}, {_code(d.os)}"])
    if run.network is not None:
        n = run.network
        shape = ", ".join(
            f"{label} {fmt_value(v, unit)}"
            for label, v, unit in (
                ("rtt", n.rtt_ms, "ms"),
                ("down", n.down_kbps, "kbps"),
                ("up", n.up_kbps, "kbps"),
                ("loss", n.loss_pct, "%"),
            )
            if v is not None
        )
        rows.append(["network", f"{_code(n.name)} ({shape})" if shape else _code(n.name)])
        if n.achieved is not None:
            a = n.achieved
            got = ", ".join(
                f"{label} {fmt_value(v, unit)}"
                for label, v, unit in (
                    ("rtt", a.rtt_ms, "ms"),
                    ("down", a.down_kbps, "kbps"),
                    ("up", a.up_kbps, "kbps"),
                )
                if v is not None
            )
            rows.append(["network achieved", got or "—"])
            for line in n.off_profile():
                rows.append(["**link off its profile**", _plain(line)])
    if run.backend is not None:
        url = mask_secrets(run.backend.url)
        rows.append(["backend", f"{run.backend.kind} {_code(url)}"])
    return ["## Run", "", *_table(["", ""], rows), ""]


def _summary_section(results: Results) -> list[str]:
    s = results.summary
    total = count_text(len(results.checks), "check")
    return [
        "## Summary",
        "",
        f"**{total}: {s.pass_} ✅ pass · {s.fail} ❌ fail · {s.skip} ⏭ skip · "
        f"{s.error} ⚠ error** — {verdict_text(results)}.",
        "",
    ]


def _recommendations_section(results: Results) -> list[str]:
    found = recommendations(results)
    if not found:
        return []
    rows = [
        [
            _code(item.ddl),
            ("✅ proven: " if item.proven else "unproven: ") + _code(item.why),
            ", ".join(_code(q) for q in item.queries) or "—",
            ", ".join(item.checks),
        ]
        for item in found
    ]
    return [
        "## Recommended indexes",
        "",
        *_table(["index", "proof", "queries", "reported by"], rows),
        "",
    ]


#: How a comparison's verdict reads in the Markdown table.
_VERDICT_TEXT = {
    "regressed": "🔻 **regressed**",
    "improved": "🔼 improved",
    "unchanged": "unchanged",
    "unjudged": "unjudged",
    "not compared": "not compared",
}


def _compared_value(check: Check | None) -> str:
    if check is None:
        return "—"
    if check.value is None:
        return f"{STATUS_ICON[check.status]} {check.status}"
    return f"{STATUS_ICON[check.status]} {fmt_value(check.value, check.unit)}"


def _comparison_row(change: CheckChange) -> list[str]:
    return [
        f"{_plain(change.title)} ({_code(change.name)}"
        + (f" on {_code(change.link)})" if change.link else ")"),
        _compared_value(change.before),
        _compared_value(change.after),
        _VERDICT_TEXT[change.verdict],
        _plain(change.why),
    ]


def _comparison_section(comparison: Comparison | None) -> list[str]:
    if comparison is None:
        return []
    base = comparison.baseline
    lines = [
        "## Compared with the baseline",
        "",
        f"Baseline: run {_code(base.id)} of {base.started_at.isoformat()} "
        f"(devicelab {_code(base.devicelab_version)}), "
        f"{run_subtitle(base, quote=_plain)}. A check regressed or improved when its value "
        f"moved by more than {fmt_number(comparison.threshold_pct)} % and, with 5 samples "
        "or more on both sides, beyond the noise of its samples (Mann-Whitney, p < 0.05).",
        "",
    ]
    lines += [f"> {_plain(note)}" for note in comparison.notes]
    if comparison.notes:
        lines.append("")
    lines += [f"**{comparison.counts_text()}**", ""]
    rows = [_comparison_row(change) for change in comparison.changes]
    lines += _table(["check", "baseline", "this run", "verdict", "change"], rows)
    return [*lines, ""]


def _matrix_section(results: Results, book: TargetBook | None, book_error: str | None) -> list[str]:
    matrix = build_matrix(results, book, book_error=book_error)
    header = ["Metric"]
    for column, title in matrix.columns:
        header.append(f"**{title}** (this run)" if column == matrix.judged else title)
    rows = []
    for row in matrix.rows:
        cells = [f"{row.title} ({_code(row.check_id)})"]
        for c in row.cells:
            verdict = c.verdict()
            cells.append(_text(f"{c.target} · {verdict}" if verdict else c.target))
        rows.append(cells)
    lines = ["## Story targets (Performance Targets by Platform)", ""]
    # A note may quote a path or a YAML error: escaped, so nothing in it is formatted.
    lines += [f"> {_plain(note)}" for note in matrix.notes]
    if matrix.notes:
        lines.append("")
    lines += _table(header, rows)
    lines += [
        "",
        "Each cell: the story's target; in the column this run is judged in, the verdict "
        "and the measured value (✅ pass, ❌ fail, ⏭ skip, ⚠ error), or *not run*.",
        "",
    ]
    return lines


def _evidence_lines(evidence: dict[str, Any]) -> list[str]:
    if not evidence:
        return ["*No evidence recorded.*", ""]
    shown = mask_secrets(evidence)
    lines = ["**Evidence**", ""]
    blocks: list[str] = []
    for key, value in shown.items():
        if isinstance(value, list) and is_scalar_list(value):
            lines.append(f"- {_code(key)}: {_code(list_text(value))}")
        elif is_flat_dict(value) and value:
            blocks += [_code(key), ""]
            rows = [[_code(str(k)), _code(scalar_text(v))] for k, v in value.items()]
            blocks += [*_table(["key", "value"], rows), ""]
        elif is_record_list(value):
            blocks += _records(key, value)
        elif isinstance(value, dict | list):
            text = truncate(json.dumps(clip_lists(value), indent=2, default=str), _MAX_JSON)
            blocks += [_code(key), "", *_fenced(text, "json"), ""]
        else:
            lines.append(f"- {_code(key)}: {_code(scalar_text(value))}")
    return [*lines, "", *blocks] if len(lines) > 2 else ["**Evidence**", "", *blocks]


def _fenced(text: str, info: str) -> list[str]:
    """``text`` as a fenced block whose fence is longer than any backtick run in it, so
    no line of the text can close it early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{info}", text, fence]


def _records(key: str, items: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for item in items:
        columns += [k for k in item if k not in columns]
    rows = [[_code(scalar_text(item.get(c), 80)) for c in columns] for item in items[:20]]
    more = [f"… {len(items) - 20} more rows", ""] if len(items) > 20 else []
    header = [_code(scalar_text(c, 80)) for c in columns]
    return [_code(key), "", *_table(header, rows), "", *more]


def _check_section(check: Check) -> list[str]:
    icon = STATUS_ICON[check.status]
    lines = [f"### {icon} {_plain(check.id)} — {_plain(check.title)}", ""]
    rows = [
        ["status", f"{icon} {check.status}"],
        ["category", _code(check.category)],
        ["value", _text(check_line(check)) if check.value is not None else "—"],
        ["stat", check.stat],
        ["target", _text(check_target_label(check.target))],
    ]
    if check.target is not None:
        column = f" (column {_code(check.target.column)})" if check.target.column else ""
        rows.append(["target row", f"{_code(check.target.source)}{column}"])
    if check.summary is not None:
        st = check.summary
        stats = ", ".join(
            f"{name} {fmt_judged(getattr(st, name), check.unit, check.target)}"
            for name in ("min", "p50", "p95", "max", "mean")
        )
        rows.append(["samples", _text(f"{len(check.samples)}: {stats}")])
    elif check.samples:
        rows.append(["samples", str(len(check.samples))])
    if check.reason:
        # Whole, as in the HTML and JUnit reports: the reason is what a reader acts on.
        rows.append(["reason", _code(scalar_text(mask_secrets(check.reason), None))])
    return [*lines, *_table(["", ""], rows), "", *_evidence_lines(check.evidence)]


def render_markdown(
    results: Results,
    book: TargetBook | None = None,
    *,
    book_error: str | None = None,
    comparison: Comparison | None = None,
) -> str:
    """The Markdown report of ``results`` (a str ending in a newline).

    ``book`` gives the story matrix its targets for every column; without it only the
    targets the checks carry are shown, and the matrix's note says why: ``book_error``
    (the lab's targets.yaml could not be read, and where) or none was given.
    ``comparison`` (``compare(results, baseline)``) adds the section comparing the run
    with its baseline, after the summary. Raises nothing for valid Results.
    """
    results = redacted(results)
    lines = [
        f"# devicelab report — {run_subtitle(results.run, quote=_plain)}",
        "",
        *_summary_section(results),
        *_comparison_section(comparison),
        *_recommendations_section(results),
        *_run_section(results),
        *_matrix_section(results, book, book_error),
        "## Checks",
        "",
    ]
    if not results.checks:
        lines += ["*This run recorded no checks.*", ""]
    for check in results.checks:
        lines += _check_section(check)
    if results.series:
        rows = [
            [
                _code(s.name),
                _text(unit_text(s.unit)),
                str(len(s.v)),
                _text(fmt_value(min(s.v), s.unit)) if s.v else "—",
                _text(fmt_value(max(s.v), s.unit)) if s.v else "—",
                f"{fmt_number(s.t[-1] - s.t[0])} s" if s.t else "—",
            ]
            for s in results.series
        ]
        lines += [
            "## Series",
            "",
            *_table(["series", "unit", "points", "min", "max", "span"], rows),
        ]
        lines.append("")
    # The last fence: no control character or lone surrogate reaches a file or terminal.
    return showable("\n".join(lines).rstrip("\n")) + "\n"
