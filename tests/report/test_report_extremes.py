"""Valid but extreme runs: float edge cases, hostile text and huge evidence.

Each renders sanely (bounded time and memory, finite SVG, every character printable) or is
refused in one line; none is a traceback.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import ConfigError
from devicelab.models import Results
from devicelab.report import load_results, render_html, render_junit, render_markdown
from devicelab.report._common import fmt_number, mask_secrets
from devicelab.report.plots import histogram, line_chart, nice_ticks
from tests.linear_time import assert_linear

#: What no report may hold: C0 controls but tab and newline, DEL, C1, lone surrogates.
UNSHOWABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
NUMBER = r"-?\d+(?:\.\d+)?"


def every_report(raw: dict[str, Any]) -> dict[str, str]:
    results = Results.model_validate(raw)
    return {
        "md": render_markdown(results),
        "html": render_html(results),
        "junit": render_junit(results),
    }


def svg_numbers(svg: str) -> list[str]:
    """Every coordinate-like attribute value and path command argument."""
    attrs = re.findall(r'\b(?:x|y|x1|x2|y1|y2|cx|cy|width|height)="([^"]*)"', svg)
    paths = re.findall(r'\bd="([^"]*)"', svg)
    return attrs + [n for d in paths for n in re.findall(r"[^MLHV\s]+", d)]


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (0.1 + 0.2, 0.3),
        (100.0, 100.00000000000001),
        (1e12, 1e12 + 1e-4),
        (-1.7e308, 1.7e308),
        (1.7e308, 1.7e308),
        (5e-324, 1e-323),
        (84.95, 84.97),
    ],
)
def test_ticks_are_few_finite_and_increasing_whatever_the_span(low: float, high: float) -> None:
    # These hung (a running sum that stopped advancing), overflowed or hit log10(0).
    from devicelab.report.plots import tick_texts

    ticks = nice_ticks(low, high)
    assert 2 <= len(ticks) <= 24
    assert all(a < b for a, b in itertools.pairwise(ticks))
    assert ticks[0] <= low and ticks[-1] >= high
    assert len(set(tick_texts(ticks))) == len(ticks)


def test_tick_labels_carry_the_precision_of_the_step() -> None:
    from devicelab.report.plots import tick_texts

    assert tick_texts(nice_ticks(84.95, 84.97)) == [
        "84.950",
        "84.955",
        "84.960",
        "84.965",
        "84.970",
    ]
    # 1e12 written out is 13 characters, wider than the axis margin.
    assert max(map(len, tick_texts(nice_ticks(1e12, 3e12)))) <= 9


@pytest.mark.parametrize(
    "values",
    [
        [0.1 + 0.2, 0.3, 0.3],
        [100.0, 100.00000000000001],
        [1e12, 1e12 + 1e-4, 1e12],
        [-1.7e308, 1.7e308],
        [5e-324, 1e-323],
    ],
)
def test_plots_of_extreme_values_are_quick_and_finite(values: list[float]) -> None:
    started = time.monotonic()
    series = line_chart("x", "MB", [float(i) for i in range(len(values))], values)
    hist = histogram("x", "ms", values, ("< 500 ms", 500.0))
    assert time.monotonic() - started < 2
    for svg in (series, hist):
        numbers = svg_numbers(svg)
        assert numbers and all(re.fullmatch(NUMBER, n) for n in numbers), numbers


def test_the_last_bar_ends_on_the_axis_end() -> None:
    svg = histogram("x", "ms", [10.0, 11.0, 12.0, 13.0, 19.9], None)
    ends = [
        float(x) + float(w)
        for x, w in re.findall(r'<rect class="bar" x="([^"]+)" y="[^"]+" width="([^"]+)"', svg)
    ]
    assert max(ends) <= 620.0


def label_box(svg: str, text: str) -> tuple[float, float]:
    """The left and right edge of a start-anchored label containing ``text``."""
    match = re.search(
        rf'<text class="[^"]*" x="([^"]+)" y="[^"]+" text-anchor="start">([^<]*{text}[^<]*)</text>',
        svg,
    )
    assert match, text
    left = float(match.group(1))
    return left, left + len(match.group(2)) * 6.2


def test_labels_stay_inside_the_plot() -> None:
    # A failing check: the target left of all samples; p95 at the right edge.
    samples = [300.0 + i for i in range(40)] + [900.0]
    svg = histogram("load", "ms", samples, ("< 200 ms", 200.0))
    for text in ("target &lt; 200 ms", "p95 ", "p50 "):
        left, right = label_box(svg, text)
        assert left >= 0 and right <= 640, (text, left, right)


def test_a_far_target_is_named_on_its_own_side_and_does_not_squeeze_the_data() -> None:
    below = histogram("x", "ms", [500.0, 510.0, 520.0], ("< 5 ms", 5.0))
    assert "(off scale, below)" in below and label_box(below, "off scale")[0] < 320
    # Three uploads of 0.06–0.09 s against 1 s: the bars keep the plot's width.
    svg = histogram("upload", "s", [0.0898, 0.0596, 0.0788], ("< 1 s", 1.0))
    assert "(off scale, above)" in svg and '<line class="guide target"' not in svg
    xs = [float(x) for x in re.findall(r'<rect class="bar" x="([^"]+)"', svg)]
    assert max(xs) - min(xs) > 200


def test_a_target_on_a_single_point_series_is_a_visible_line() -> None:
    from devicelab.report.plots import Guide

    svg = line_chart("memory", "MB", [3.0], [40.0], [Guide("< 50 MB", 3.0, 50.0, 3.0, 50.0)])
    x1, x2 = re.search(
        r'<line class="guide target" x1="([^"]+)" y1="[^"]+" x2="([^"]+)"', svg
    ).groups()  # type: ignore[union-attr]
    assert float(x2) - float(x1) > 500


def test_a_delta_target_is_no_line_on_an_absolute_series(raw: dict[str, Any]) -> None:
    raw["checks"] = [c for c in raw["checks"] if c["id"] == "memory_100_conversations"]
    raw["series"] = [s for s in raw["series"] if s["name"] == "memory"]
    assert raw["checks"] and raw["series"]
    assert '<line class="guide target"' not in render_html(Results.model_validate(raw))


def test_extreme_samples_and_text_render_in_every_format(raw: dict[str, Any]) -> None:
    check = raw["checks"][0]
    check["samples"] = [-1.7e308, 1.7e308, 5e-324]
    check["evidence"] = {
        "deep": json.loads("[" * 2000 + "]" * 2000),
        "huge": 10**4000,
        "suggestions": [{"ddl": "CREATE INDEX x", "queries": [1, 2.5, None], "proof": 7}],
    }
    check["title"] = "lone \ud800 surrogate"
    raw["series"][0]["v"] = [
        1.7e308 if i % 2 else -1.7e308 for i in range(len(raw["series"][0]["v"]))
    ]
    reports = every_report(raw)
    for name, text in reports.items():
        text.encode("utf-8")  # no lone surrogate left
        assert not UNSHOWABLE.search(text), name
    assert "inf" not in re.sub(r"[a-z]inf|inf[a-z]", "", reports["html"])
    assert "(nested deeper than 40 levels)" in reports["md"]
    assert "`1`, `2.5`, `null`" in reports["md"]


def test_stdout_that_cannot_be_written_is_one_line_exit_3(results_path: Path, cli: Any) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    done = cli("report", str(results_path), "--format", "md", "-o", "/dev/stdout")
    assert done.returncode == 0
    with Path("/dev/full").open("w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "devicelab", "report", str(results_path)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "stdout: cannot write" in done.stderr


def test_shown_values_never_contradict_the_verdict(raw: dict[str, Any]) -> None:
    check = raw["checks"][1]
    check.update(value=199.96, status="pass")
    check["target"].update(op="<", value=200)
    leak = raw["checks"][0]
    leak.update(
        value=0.9996, unit="MB_per_min", stat="value", status="pass", samples=[], summary=None
    )
    leak["target"].update(op="<", value=1, unit="MB_per_min")
    reports = every_report(raw)
    for name, shown in reports.items():
        text = html.unescape(shown)
        assert "200 ms vs" not in text and "✅ 200 ms" not in text, name
        assert "199.96 ms vs target < 200 ms" in text, name
        assert "0.9996 MB/min vs target < 1 MB/min" in text, name
        assert "MB_per_min" not in text.replace("`", ""), name
    # The terminal summaries of `devicelab run` and the pytest plugin say it the same way.
    from devicelab.cli.run import summary_lines

    printed = "\n".join(summary_lines(Results.model_validate(raw)))
    assert "p95 199.96 ms (target < 200 ms" in printed, printed
    assert "value 0.9996 MB/min (target < 1 MB/min" in printed, printed


def test_counts_are_singular_for_one(raw: dict[str, Any]) -> None:
    raw["checks"] = raw["checks"][:1]
    raw["checks"][0]["samples"] = [12.0]
    for name, text in every_report(raw).items():
        assert "1 checks" not in text and "1 samples" not in text, name
    assert "1 check:" in render_markdown(Results.model_validate(raw))


def test_run_text_is_inert_in_markdown(raw: dict[str, Any]) -> None:
    evil = "<img src=x onerror=alert(1)> http://evil.example www.evil.example\n```\n# head"
    raw["run"]["network"]["name"] = evil
    raw["run"]["device"]["model"] = evil
    raw["run"]["device"]["os"] = "\x1b]0;title\x07\x1b[2J"
    raw["run"]["devicelab_version"] = evil
    check = raw["checks"][0]
    check["category"] = evil
    check["unit"] = "ms<img src=x onerror=alert(2)>"
    check["target"]["source"] = evil
    check["evidence"] = {evil: 1, "rows": [{evil: 1}]}
    md = render_markdown(Results.model_validate(raw))
    assert md.count("\n# ") == 0 and md.startswith("# devicelab report")
    assert len([line for line in md.splitlines() if line.startswith("# ")]) == 1
    assert not UNSHOWABLE.search(md)
    # Outside code spans (and backslash escapes) nothing can become a tag, a link or a fence.
    outside = re.sub(r"\\.", "•", re.sub(r"(`+)(?:(?!\1).)*?\1", "", md))
    assert "<img" not in outside and "http://" not in outside and "www." not in outside
    assert "\n```\n# head" not in md


def test_control_characters_never_reach_junit_or_the_terminal(
    raw: dict[str, Any], results_path: Path, tmp_path: Path, cli: Any
) -> None:
    raw["checks"][0]["reason"] = "DEL\x7f C1\x85\x9b[2J ESC\x1b]0;x\x07"
    raw["run"]["device"]["model"] = "Pixel\x9b31m"
    assert not UNSHOWABLE.search(every_report(raw)["junit"])
    path = tmp_path / "results.json"
    path.write_text(json.dumps(raw))
    done = cli("report", str(path))
    assert done.returncode == 0 and not UNSHOWABLE.search(done.stdout)


def test_junit_time_is_sane_and_testsuites_has_no_skipped(raw: dict[str, Any]) -> None:
    raw["checks"][0]["evidence"]["duration_s"] = 1e308
    junit = every_report(raw)["junit"]
    assert re.search(r"<testsuites [^>]*\bskipped=", junit) is None
    assert re.search(r'<testsuite [^>]*\bskipped="', junit)
    times = re.findall(r'\btime="([^"]+)"', junit)
    assert all(len(t) <= 14 for t in times), times


def test_an_unfinished_run_never_reads_as_passed(raw: dict[str, Any]) -> None:
    raw["run"]["finished_at"] = None
    raw["checks"] = [c for c in raw["checks"] if c["status"] == "pass"]
    reports = every_report(raw)
    for name, text in reports.items():
        assert "unfinished" in text.lower(), name
        assert "all checks passed" not in text.lower(), name
    suite_time = re.search(r'<testsuite [^>]*\btime="([^"]+)"', reports["junit"])
    assert suite_time and float(suite_time.group(1)) > 0


def test_long_text_wraps_in_html(raw: dict[str, Any]) -> None:
    raw["checks"][0]["id"] = "x" * 143
    page = render_html(Results.model_validate(raw))
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    rule = re.search(r"([^{}]*)\{[^}]*overflow-wrap:anywhere", style)
    assert rule and {"td", "th", "h1", "summary", "code"} <= set(rule.group(1).strip().split(","))


def test_masking_a_long_hex_string_is_linear() -> None:
    text = "ab" * 50_000
    assert mask_secrets({"blob": text})["blob"] == text
    assert_linear(lambda blob: mask_secrets({"blob": blob}), "ab", 6_250)
    assert mask_secrets("postgres://u:hunter2@h/db") == "postgres://u:***@h/db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"schema": "devicelab.results/1", "x": NaN}', "NaN"),
        ('{"schema": "devicelab.results/1", "x": -Infinity}', "-Infinity"),
        ('{"schema": "devicelab.results/1", "x": 1e999}', "1e999"),
        ('{"schema": "devicelab.results/1", "x": ' + "9" * 5000 + "}", "5000 digits"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_numbers_outside_the_contract_are_refused_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_results(path)


def test_a_file_without_schema_is_refused_and_a_wrong_summary_is_said(
    raw: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({k: v for k, v in raw.items() if k != "schema"}))
    with pytest.raises(ConfigError, match="missing required field 'schema'"):
        load_results(path)
    raw["summary"] = {"pass": 99, "fail": 0, "skip": 0, "error": 0}
    path.write_text(json.dumps(raw))
    said: list[str] = []
    results = load_results(path, warn=said.append)
    assert results.summary.pass_ != 99 and len(said) == 1 and "pass 99" in said[0]


def test_a_non_finite_value_is_never_a_pass_mark(raw: dict[str, Any]) -> None:
    check = next(c for c in raw["checks"] if c["id"] == "message_delivery")
    check["value"] = float("nan")
    md = render_markdown(Results.model_validate(raw))
    assert "✅ NaN" not in md and "not measured (NaN)" in md
    assert fmt_number(1e308) == "1e+308"
