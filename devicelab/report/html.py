"""The HTML report: one self-contained file, readable offline, with inline SVG plots.

Everything is inline (one ``<style>``, no script at all) and a Content-Security-Policy of
``default-src 'none'`` stops the page from fetching anything even if some text slipped
through. The page holds no ``http://`` or ``https://`` anywhere: URLs that come from a
run (the backend URL, evidence) are shown as text with the scheme separator defanged,
``https[:]//host``, and never as links — a copied report can neither phone home nor be
turned into a click-through. Secret-looking evidence keys are masked (see ``_common``).
"""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from devicelab.models import Check, Results, Series, TargetBook
from devicelab.report._common import (
    STATUS_WORD,
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
    verdict_text,
)
from devicelab.report.compare import Comparison
from devicelab.report.matrix import MatrixCell, build_matrix
from devicelab.report.plots import Guide, histogram, line_chart

__all__ = ["defang", "render_html"]


_CSS = """
:root{--fg:#1d2433;--muted:#5b6475;--bg:#fff;--card:#f6f7f9;--line:#d9dde3;
--pass:#1a7f37;--fail:#cf222e;--skip:#6e7781;--error:#b35900;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 10px;
border-bottom:1px solid var(--line);padding-bottom:4px}
.sub{color:var(--muted);margin:0}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--card);padding:8px;overflow:auto;max-height:320px;margin:4px 0}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--card)}
.tiles{display:flex;gap:10px;flex-wrap:wrap;margin-top:16px}
.tile{padding:10px 16px;border-radius:8px;background:var(--card);min-width:110px}
.tile b{display:block;font-size:26px}
.tile.pass b{color:var(--pass)}.tile.fail b{color:var(--fail)}
.tile.skip b{color:var(--skip)}.tile.error b{color:var(--error)}
.verdict{font-weight:600;margin:10px 0 0}
.s-pass{color:var(--pass)}.s-fail{color:var(--fail)}.s-skip{color:var(--skip)}
.s-error{color:var(--error)}.s-notrun{color:var(--muted);font-style:italic}
.badge{display:inline-block;font:600 11px/1.6 system-ui,sans-serif;padding:0 6px;white-space:nowrap;
border-radius:4px;color:#fff;letter-spacing:.03em}
.b-pass{background:var(--pass)}.b-fail{background:var(--fail)}
.b-skip{background:var(--skip)}.b-error{background:var(--error)}
table.matrix td.judged,table.matrix th.judged{background:#eef5ff}
table.matrix .t{display:block}
dl.run{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dl.run dt{color:var(--muted)}dl.run dd{margin:0}
.plots{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;padding:8px;background:var(--card);border-radius:8px;flex:1 1 480px;
max-width:560px}
figcaption{font-weight:600;margin:0 0 4px}
svg.plot{width:100%;height:auto;background:#fff;display:block}
svg .grid{stroke:#e6e8ec}svg .axis,svg .tickmark{stroke:#8c959f;fill:none}
svg .tick{font-size:11px;fill:var(--muted)}svg .label{font-size:12px;fill:var(--fg)}
svg .line{fill:none;stroke:var(--accent);stroke-width:1.8}
svg .point{fill:var(--accent)}svg .bar{fill:#54aeff;stroke:none}
svg .marker{stroke:#57606a;stroke-dasharray:4 3}svg .marker-label{font-size:11px;fill:#57606a}
svg .guide{stroke-width:1.6;stroke-dasharray:7 4}
svg .guide.target{stroke:var(--fail)}svg .guide.budget{stroke:var(--error)}
svg .guide-label{font-size:11px}svg .guide-label.target{fill:var(--fail)}
svg .guide-label.budget{fill:var(--error)}svg .empty{fill:var(--muted)}
details.check{border:1px solid var(--line);border-radius:8px;margin:8px 0;padding:6px 10px}
details.check summary{cursor:pointer;font-weight:600}
footer{color:var(--muted);margin-top:32px;font-size:12px}
h1,h2,h4,p,td,th,dt,dd,summary,figcaption,code{overflow-wrap:anywhere;word-break:break-word}
pre{white-space:pre-wrap;overflow-wrap:anywhere}
table{max-width:100%}
"""


def _e(text: Any) -> str:
    return defang(escape(str(text)))


def _status(status: str) -> str:
    # Text badges, not emoji: a machine without an emoji font would draw empty boxes.
    return f'<span class="badge b-{status}">{STATUS_WORD[status]}</span>'


def _value_html(value: Any) -> str:
    """Evidence (already masked and clipped) as HTML: code, small tables or JSON."""
    if isinstance(value, list) and is_scalar_list(value):
        return f"<code>{_e(list_text(value))}</code>"
    if is_flat_dict(value) and value:
        rows = "".join(
            f"<tr><th>{_e(k)}</th><td><code>{_e(scalar_text(v))}</code></td></tr>"
            for k, v in value.items()
        )
        return f"<table>{rows}</table>"
    if is_record_list(value):
        columns: list[str] = []
        for item in value:
            columns += [k for k in item if k not in columns]
        head = "".join(f"<th>{_e(c)}</th>" for c in columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td><code>{_e(scalar_text(i.get(c), 80))}</code></td>" for c in columns)
            + "</tr>"
            for i in value[:20]
        )
        more = f"<p>… {len(value) - 20} more rows</p>" if len(value) > 20 else ""
        return f"<table><tr>{head}</tr>{body}</table>{more}"
    if isinstance(value, dict | list):
        text = truncate(json.dumps(clip_lists(value), indent=2, default=str), 4000)
        return f"<pre>{_e(text)}</pre>"
    return f"<code>{_e(scalar_text(value, 2000))}</code>"


def _evidence(evidence: dict[str, Any]) -> str:
    if not evidence:
        return "<p><em>No evidence recorded.</em></p>"
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_value_html(v)}</td></tr>"
        for k, v in mask_secrets(evidence).items()
    )
    return f'<table class="evidence">{rows}</table>'


def _run(results: Results) -> str:
    run = results.run
    items: list[tuple[str, str]] = [("run id", run.id), ("kind", run.kind)]
    items.append(("started", run.started_at.isoformat()))
    if run.finished_at is not None:
        items.append(
            ("finished", f"{run.finished_at.isoformat()} ({fmt_number(duration_s(run) or 0)} s)")
        )
    else:
        items.append(("finished", UNFINISHED))
    items.append(("devicelab", run.devicelab_version))
    if run.device is not None:
        d = run.device
        items.append(("device", f"{d.id} — {d.platform}, {d.model}, {d.os}"))
    if run.network is not None:
        n = run.network
        shape = [
            f"{k} {fmt_value(v, u)}"
            for k, v, u in (
                ("rtt", n.rtt_ms, "ms"),
                ("down", n.down_kbps, "kbps"),
                ("up", n.up_kbps, "kbps"),
                ("loss", n.loss_pct, "%"),
            )
            if v is not None
        ]
        items.append(("network", f"{n.name} ({', '.join(shape)})" if shape else n.name))
        if n.achieved is not None:
            got = [
                f"{k} {fmt_value(v, u)}"
                for k, v, u in (
                    ("rtt", n.achieved.rtt_ms, "ms"),
                    ("down", n.achieved.down_kbps, "kbps"),
                    ("up", n.achieved.up_kbps, "kbps"),
                )
                if v is not None
            ]
            items.append(("network achieved", ", ".join(got) or "—"))
            items.extend(("link off its profile", line) for line in n.off_profile())
    if run.backend is not None:
        items.append(("backend", f"{run.backend.kind} {mask_secrets(run.backend.url)}"))
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f'<section><h2>Run</h2><dl class="run">{rows}</dl></section>'


def _summary(results: Results) -> str:
    s = results.summary
    tiles = "".join(
        f'<div class="tile {cls}"><b>{n}</b>{cls}</div>'
        for cls, n in (("pass", s.pass_), ("fail", s.fail), ("skip", s.skip), ("error", s.error))
    )
    verdict = verdict_text(results)
    return (
        f'<section class="summary"><div class="tiles">{tiles}</div>'
        f'<p class="verdict">{count_text(len(results.checks), "check")} — '
        f"{_e(verdict[0].upper() + verdict[1:])}.</p></section>"
    )


def _recommendations(results: Results) -> str:
    found = recommendations(results)
    if not found:
        return ""
    rows = []
    for item in found:
        badge = (
            '<span class="badge b-pass">PROVEN</span>'
            if item.proven
            else '<span class="badge b-skip">UNPROVEN</span>'
        )
        rows.append(
            f"<tr><td><code>{_e(item.ddl)}</code></td><td>{badge} {_e(item.why)}</td>"
            f"<td>{_e(', '.join(item.queries) or '—')}</td>"
            f"<td>{_e(', '.join(item.checks))}</td></tr>"
        )
    return (
        "<section><h2>Recommended indexes</h2><table><tr><th>index</th><th>proof</th>"
        f"<th>queries</th><th>reported by</th></tr>{''.join(rows)}</table></section>"
    )


#: A comparison's verdict as a badge: (css class, word).
_VERDICT_BADGE = {
    "regressed": ("b-fail", "REGRESSED"),
    "improved": ("b-pass", "IMPROVED"),
    "unchanged": ("b-skip", "UNCHANGED"),
    "unjudged": ("b-skip", "UNJUDGED"),
    "not compared": ("b-skip", "NOT COMPARED"),
}


def _compared_value(check: Check | None) -> str:
    if check is None:
        return "—"
    shown = check.status if check.value is None else fmt_value(check.value, check.unit)
    return f"{_status(check.status)} {_e(shown)}"


def _comparison(comparison: Comparison | None) -> str:
    if comparison is None:
        return ""
    base = comparison.baseline
    rows = []
    for change in comparison.changes:
        css, word = _VERDICT_BADGE[change.verdict]
        on = f" on <code>{_e(change.link)}</code>" if change.link else ""
        rows.append(
            f"<tr><td>{_e(change.title)} <code>{_e(change.name)}</code>{on}</td>"
            f"<td>{_compared_value(change.before)}</td><td>{_compared_value(change.after)}</td>"
            f'<td><span class="badge {css}">{word}</span></td><td>{_e(change.why)}</td></tr>'
        )
    notes = "".join(f"<p><em>{_e(mask_secrets(n))}</em></p>" for n in comparison.notes)
    return (
        "<section><h2>Compared with the baseline</h2>"
        f"<p>Baseline: run <code>{_e(base.id)}</code> of {_e(base.started_at.isoformat())} "
        f"(devicelab <code>{_e(base.devicelab_version)}</code>), {_e(run_subtitle(base))}. "
        "A check regressed or improved when its value moved by more than "
        f"{_e(fmt_number(comparison.threshold_pct))} % and, with 5 samples or more on both "
        "sides, beyond the noise of its samples (Mann-Whitney, p &lt; 0.05).</p>"
        f'{notes}<p class="verdict">{_e(comparison.counts_text())}</p>'
        "<table><tr><th>check</th><th>baseline</th><th>this run</th><th>verdict</th>"
        f"<th>change</th></tr>{''.join(rows)}</table></section>"
    )


def _matrix_verdict(cell: MatrixCell, check: Check) -> str:
    shown = "" if check.value is None else f" {_e(cell.measured(check))}"
    return f'{_status(check.status)}<span class="s-{check.status}">{shown}</span>'


def _matrix(results: Results, book: TargetBook | None, book_error: str | None) -> str:
    matrix = build_matrix(results, book, book_error=book_error)
    head = "<th>Metric</th>" + "".join(
        f'<th class="judged">{_e(title)} (this run)</th>'
        if col == matrix.judged
        else f"<th>{_e(title)}</th>"
        for col, title in matrix.columns
    )
    rows = []
    for row in matrix.rows:
        cells = [f"<th>{_e(row.title)}<br><code>{_e(row.check_id)}</code></th>"]
        for c in row.cells:
            verdict = ""
            if c.judged:
                if c.check is None:
                    verdict = '<span class="s-notrun">not run</span>'
                else:
                    # Every check of the id: a session may have measured it twice.
                    verdict = " · ".join(_matrix_verdict(c, k) for k in c.checks)
            cls = ' class="judged"' if c.judged else ""
            cells.append(f'<td{cls}><span class="t">{_e(c.target)}</span>{verdict}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<p><em>{_e(n)}</em></p>" for n in matrix.notes)
    return (
        "<section><h2>Story targets — Performance Targets by Platform</h2>"
        f'{notes}<table class="matrix"><tr>{head}</tr>{"".join(rows)}</table>'
        "<p>Each cell: the story's target; in the column this run is judged in, the verdict "
        "and the measured value, or <em>not run</em>.</p></section>"
    )


#: Checks whose value is an increase (after minus before a load), not a level: their
#: target bounds a difference, so it is no line on a series of absolute levels.
_INCREASES = frozenset({"memory_100_conversations", "memory_1000_messages"})


def _guides(series: Series, checks: list[Check]) -> list[Guide]:
    """Reference lines for a series: the target of a check measured on it (same unit,
    and a level, not an increase), and for battery level the drain budget of
    battery_drain as a slope from the start."""
    if not series.t:
        return []
    t0, t1 = series.t[0], series.t[-1]
    guides = []
    for check in checks:
        target = check.target
        if target is None:
            continue
        named = check.evidence.get("series") == series.name
        same_family = check.id.split("_")[0] == series.name.split("_")[0].split(".")[0]
        increase = check.id in _INCREASES or "increase" in check.title.lower()
        if (
            (named or same_family)
            and not increase
            and target.unit == series.unit
            and check.id != "battery_drain"
        ):
            guides.append(
                Guide(
                    f"{check.id} {check_target_label(target)}", t0, target.value, t1, target.value
                )
            )
        if check.id == "battery_drain" and "battery" in series.name and series.unit in ("%", "pct"):
            hours = (t1 - t0) / 3600
            start = series.v[0]
            label = f"budget {fmt_number(target.value)} %/h"
            guides.append(Guide(label, t0, start, t1, start - target.value * hours, kind="budget"))
    return guides


_SCALE = {("ms", "s"): 0.001, ("s", "ms"): 1000.0}


def _target_in(check: Check) -> tuple[str, float] | None:
    """The check's target (label, value) in the unit of its samples, when comparable."""
    target = check.target
    if target is None:
        return None
    if target.unit == check.unit:
        return check_target_label(target), target.value
    factor = _SCALE.get((target.unit, check.unit))
    if factor is None:
        return None
    return check_target_label(target), target.value * factor


def _plots(results: Results) -> str:
    parts = []
    if results.series:
        figures = "".join(
            f"<figure><figcaption>{_e(s.name)}</figcaption>"
            f"{line_chart(s.name, s.unit, s.t, s.v, _guides(s, results.checks))}</figure>"
            for s in results.series
        )
        parts.append(
            f'<section><h2>Series over time</h2><div class="plots">{figures}</div></section>'
        )
    sampled = [c for c in results.checks if any(math.isfinite(x) for x in c.samples)]
    if sampled:
        figures = "".join(
            f"<figure><figcaption>{_e(c.id)} — {_e(mask_secrets(c.title))}</figcaption>"
            + histogram(
                c.id,
                c.unit,
                c.samples,
                _target_in(c),
            )
            + "</figure>"
            for c in sampled
        )
        parts.append(
            f'<section><h2>Latency distributions</h2><div class="plots">{figures}</div></section>'
        )
    return "".join(parts)


def _checks(results: Results) -> str:
    overview = "".join(
        f"<tr><td>{_status(c.status)}</td><td><code>{_e(c.id)}</code></td><td>{_e(mask_secrets(c.title))}</td>"
        f"<td>{_e(fmt_judged(c.value, c.unit, c.target))}</td><td>{_e(c.stat)}</td>"
        f"<td>{_e(check_target_label(c.target))}</td></tr>"
        for c in results.checks
    )
    details = []
    seen: dict[str, int] = {}
    for c in results.checks:
        # An id measured twice in a session gets "-2" on its second element: HTML ids
        # are unique.
        seen[c.id] = seen.get(c.id, 0) + 1
        anchor = f"check-{c.id}" + (f"-{seen[c.id]}" if seen[c.id] > 1 else "")
        facts = [
            ("value", check_line(c) if c.value is not None else "—"),
            ("category", c.category),
            ("stat", c.stat),
            ("target", check_target_label(c.target)),
        ]
        if c.target is not None:
            column = f" (column {c.target.column})" if c.target.column else ""
            facts.append(("target row", c.target.source + column))
        if c.summary is not None:
            st = c.summary
            facts.append(
                (
                    "samples",
                    f"{len(c.samples)}: "
                    + ", ".join(
                        f"{k} {fmt_judged(getattr(st, k), c.unit, c.target)}"
                        for k in ("min", "p50", "p95", "max", "mean")
                    ),
                )
            )
        if c.reason:
            facts.append(("reason", str(mask_secrets(c.reason))))
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
        opened = " open" if c.status in ("fail", "error") else ""
        details.append(
            f'<details class="check" id="{_e(anchor)}"{opened}><summary>{_status(c.status)} '
            f"<code>{_e(c.id)}</code> — {_e(mask_secrets(c.title))}</summary><table>{rows}</table>"
            f"<h4>Evidence</h4>{_evidence(c.evidence)}</details>"
        )
    table = (
        "<table><tr><th>status</th><th>check</th><th>title</th><th>value</th><th>stat</th>"
        f"<th>target</th></tr>{overview}</table>"
        if results.checks
        else "<p><em>This run recorded no checks.</em></p>"
    )
    return f"<section><h2>Checks</h2>{table}{''.join(details)}</section>"


def render_html(
    results: Results,
    book: TargetBook | None = None,
    *,
    book_error: str | None = None,
    comparison: Comparison | None = None,
) -> str:
    """The self-contained HTML report of ``results`` (one str, a whole document).

    ``book`` gives the story matrix its targets for every column; ``book_error`` says why
    there is none (as render_markdown's); ``comparison`` adds the section comparing the run
    with its baseline, after the summary. The text holds no
    ``http://`` or ``https://`` and nothing that fetches. Raises nothing for valid Results.
    """
    results = redacted(results)
    title = f"devicelab report — {run_subtitle(results.run)}"
    page = "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'\">",
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
            "<header><h1>devicelab report</h1>",
            f'<p class="sub">{_e(run_subtitle(results.run))}</p></header>',
            _summary(results),
            _comparison(comparison),
            _recommendations(results),
            _run(results),
            _matrix(results, book, book_error),
            _plots(results),
            _checks(results),
            f"<footer>Made by devicelab {_e(results.run.devicelab_version)} from a "
            f"{_e(results.schema_)} results file. "
            "Self-contained: no scripts, nothing fetched.</footer>",
            "</main></body></html>",
        ]
    )
    # The second fence: whatever the parts above let through, no scheme:// and no
    # control character or lone surrogate (which no encoder takes) survives.
    return showable(defang(page)) + "\n"
