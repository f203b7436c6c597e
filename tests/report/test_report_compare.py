"""A run compared with its baseline: regressions beyond the threshold and the samples'
noise, improvements, what cannot be compared, and ``devicelab report --baseline``.

Checks are made by targets.judge against the lab's own targets, as a real run makes them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devicelab.config import load_targets
from devicelab.models import Check, DeviceInfo, NetworkInfo, Results, RunInfo
from devicelab.report import compare, render_html, render_markdown
from devicelab.report.compare import CheckChange, mann_whitney_p
from devicelab.targets import judge, resolve
from tests.report.test_report_junit import counts, validate

#: The list loads of a run at the edge of the 4G target (ms, 20 samples)...
EDGE = [189.8, 191.2, 192.0, 192.7, 193.1, 193.9, 194.4, 195.0, 195.3, 195.9,
        196.3, 196.8, 197.2, 197.6, 198.0, 198.3, 198.6, 198.9, 199.2, 199.9]  # fmt: skip
#: ...and of a run 18 % slower, every sample.
SLOWER = [round(v * 1.18, 1) for v in EDGE]


def _list_load(samples: list[float]) -> Check:
    book = load_targets()
    return judge(check="conversation_list_load", title="Conversation list load",
                 category="latency", samples=samples, unit="ms", column="4g",
                 target=resolve(book, "conversation_list_load", "web", "4g"))  # fmt: skip


def _run(run_id: str, checks: list[Check], network: str = "4g") -> Results:
    return Results(run=RunInfo(
        id=run_id, kind="device", devicelab_version="0.1.0+gabc1234",
        started_at=datetime(2026, 12, 1, 20, 0, tzinfo=UTC),
        finished_at=datetime(2026, 12, 1, 20, 7, tzinfo=UTC),
        device=DeviceInfo(id="web", platform="web", model="Chromium", os="Debian 12"),
        network=NetworkInfo(name=network)), checks=checks)  # fmt: skip


def _only(results: Results, baseline: Results, check_id: str) -> CheckChange:
    (change,) = [c for c in compare(results, baseline).changes if c.id == check_id]
    return change


@pytest.mark.parametrize(
    ("x", "y", "scipy_p"),
    [  # scipy.stats.mannwhitneyu(x, y, method="asymptotic").pvalue, scipy 1.17.1
        ([194.0, 196.1, 197.3, 198.9, 199.2, 195.5, 196.6, 197.7, 193.1, 201.4],
         [204.8, 203.9, 205.0, 199.9, 206.1, 207.2, 204.4, 202.2, 208.0, 203.3],
         0.00024612812790522973),
        ([1, 1, 2, 2, 3, 3], [2, 2, 3, 3, 4, 4, 5], 0.06543794068509567),  # ties
        (list(range(1, 21)), list(range(21, 41)), 6.795615128173358e-08),
        ([10.0] * 6, [10.0] * 6, 1.0),
    ],
)  # fmt: skip
def test_mann_whitney_p_is_scipys(x: list[float], y: list[float], scipy_p: float) -> None:
    assert mann_whitney_p(x, y) == pytest.approx(scipy_p, rel=1e-9)


def test_a_slower_list_load_regressed_and_a_faster_one_improved() -> None:
    edge, slower = _run("before", [_list_load(EDGE)]), _run("after", [_list_load(SLOWER)])
    change = _only(slower, edge, "conversation_list_load")
    assert change.verdict == "regressed", change.why
    assert change.change_pct == pytest.approx(18.0, abs=0.2)
    assert change.p_value is not None and change.p_value < 0.001
    assert change.why.startswith("p95 199.2 ms → 235.1 ms (+18")
    assert change.why.endswith("worse by more than 10 %; pass → fail")
    back = _only(edge, slower, "conversation_list_load")
    assert back.verdict == "improved" and "better by more than 10 %" in back.why
    assert compare(slower, edge).regressed == [change]
    assert compare(slower, edge, threshold_pct=20).regressed == []  # 18 % is within 20 %


def test_a_p95_that_moved_on_noise_alone_is_unchanged() -> None:
    """Two runs of one build: the same spread, two slow outliers in the second run move
    its p95 past the threshold; the samples as a whole do not differ."""
    noisy = [*EDGE[:-2], 240.0, 245.0]
    change = _only(_run("b", [_list_load(noisy)]), _run("a", [_list_load(EDGE)]),
                   "conversation_list_load")  # fmt: skip
    assert change.change_pct is not None and change.change_pct > 10
    assert change.verdict == "unchanged"
    assert "within the noise of the samples (p >= 0.05)" in change.why
    assert change.p_value is not None and change.p_value > 0.5


def test_few_samples_are_judged_by_the_threshold_alone() -> None:
    change = _only(_run("b", [_list_load([230.0, 236.0])]), _run("a", [_list_load([190.0, 199.0])]),
                   "conversation_list_load")  # fmt: skip
    assert change.verdict == "regressed" and change.p_value is None


def test_a_count_that_must_be_zero_regressed_from_zero() -> None:
    def scans(n: float) -> Check:
        return Check(id="seq_scans", title="Sequential scans", category="database",
                     status="pass" if n == 0 else "fail", value=n, unit="scans",
                     target={"op": "==", "value": 0, "unit": "scans", "source": "t"})  # fmt: skip

    change = _only(_run("b", [scans(5)]), _run("a", [scans(0)]), "seq_scans")
    assert change.verdict == "regressed" and math.isinf(change.change_pct or 0)
    assert "(from 0)" in change.why
    assert _only(_run("b", [scans(0)]), _run("a", [scans(5)]), "seq_scans").verdict == "improved"


def test_seconds_and_milliseconds_compare_and_higher_is_better_for_a_lower_bound() -> None:
    in_ms = Check(id="x", title="X", category="c", status="pass", value=1200.0, unit="ms",
                  target={"op": "<", "value": 3000, "unit": "ms", "source": "t"})  # fmt: skip
    in_s = in_ms.model_copy(update={"value": 1.5, "unit": "s"})
    change = _only(_run("b", [in_s]), _run("a", [in_ms]), "x")
    assert change.verdict == "regressed" and change.why.startswith("value 1.2 s → 1.5 s (+25 %")
    ratio = Check(id="hit", title="Hit ratio", category="c", status="pass", value=99.0, unit="%",
                  target={"op": ">", "value": 95, "unit": "%", "source": "t"})  # fmt: skip
    fell = ratio.model_copy(update={"value": 80.0})
    assert _only(_run("b", [fell]), _run("a", [ratio]), "hit").verdict == "regressed"


def test_what_cannot_be_compared_says_why() -> None:
    listed = _list_load(EDGE)
    na = Check(id="battery_drain", title="Battery", category="power", status="skip",
               reason="N/A on web", target=None)  # fmt: skip
    error = listed.model_copy(update={"id": "message_search", "status": "error", "value": None})
    cut = listed.model_copy(update={"id": "reconnect", "evidence": {"censored": True}})
    before = _run("a", [listed, na, error, cut.model_copy(update={"evidence": {}})])
    after = _run("b", [na, error, cut, listed.model_copy(update={"id": "message_delivery"})])
    found = {c.id: c for c in compare(after, before).changes}
    assert {i: c.verdict for i, c in found.items()} == dict.fromkeys(found, "not compared")
    assert found["conversation_list_load"].why == "not in this run"
    assert found["message_delivery"].why == "new in this run: not in the baseline"
    assert found["battery_drain"].why == "nothing measured in this run (skip)"
    assert found["message_search"].why == "nothing measured in this run (error)"
    assert found["reconnect"].why == "a lower bound in this run (the check was cut short)"


def test_a_baseline_on_another_network_is_said_and_rows_put_regressions_first() -> None:
    slower = _list_load(SLOWER)
    other = Check(id="z", title="Z", category="c", status="pass", value=1.0, unit="ms",
                  target={"op": "<", "value": 3, "unit": "ms", "source": "t"})  # fmt: skip
    comparison = compare(_run("b", [other, slower]), _run("a", [other, _list_load(EDGE)], "wifi"))
    assert comparison.notes == ["the baseline ran on network wifi, this run on 4g"]
    assert [c.id for c in comparison.changes] == ["conversation_list_load", "z"]
    assert comparison.counts_text() == (
        "1 regressed, 0 improved, 1 unchanged, 0 unjudged, 0 not compared"
    )
    with pytest.raises(ValueError, match="expected a finite number > 0"):
        compare(_run("b", []), _run("a", []), threshold_pct=math.nan)


def test_markdown_and_html_show_the_comparison_after_the_summary() -> None:
    results, baseline = _run("after", [_list_load(SLOWER)]), _run("before", [_list_load(EDGE)])
    comparison = compare(results, baseline)
    text = render_markdown(results, comparison=comparison)
    assert text.index("## Summary") < text.index("## Compared with the baseline")
    assert (
        "Baseline: run `before` of 2026-12-01T20:00:00+00:00 (devicelab `0.1.0+gabc1234`)" in text
    )
    row = next(line for line in text.splitlines() if line.startswith("| Conversation list"))
    assert "✅ 199.2 ms" in row and "❌ 235.1 ms" in row and "🔻 **regressed**" in row
    page = render_html(results, comparison=comparison)
    assert "<h2>Compared with the baseline</h2>" in page and "REGRESSED" in page
    assert "## Compared" not in render_markdown(results)  # no baseline, no section


def _write(path: Path, results: Results) -> Path:
    path.write_text(json.dumps(results.model_dump(mode="json", by_alias=True)))
    return path


def _report(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devicelab", "report", *map(str, args)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_report_baseline_gates_on_a_regression_only_when_asked(tmp_path: Path) -> None:
    new = _write(tmp_path / "new.json", _run("after", [_list_load(SLOWER)]))
    old = _write(tmp_path / "old.json", _run("before", [_list_load(EDGE)]))
    shown = _report(new, "--baseline", old, "-o", tmp_path / "r.md")
    assert shown.returncode == 0, shown.stderr
    assert "## Compared with the baseline" in (tmp_path / "r.md").read_text()
    said = "devicelab: against baseline before: 1 regressed, 0 improved"
    assert said in shown.stderr
    assert (
        "regressed: conversation_list_load (p95 199.2 ms → 235.1 ms (+18 %, p<0.001))"
        in shown.stderr
    )
    gated = _report(new, "--baseline", old, "--fail-on-regression", "--format", "html",
                    "-o", tmp_path / "r.html")  # fmt: skip
    assert gated.returncode == 1 and "REGRESSED" in (tmp_path / "r.html").read_text()
    same = _report(old, "--baseline", old, "--fail-on-regression", "-o", tmp_path / "s.md")
    assert same.returncode == 0, same.stderr


def test_junit_adds_a_baseline_suite_whose_regressions_fail(tmp_path: Path) -> None:
    na = Check(id="battery_drain", title="Battery", category="power", status="skip", reason="N/A")
    new = _write(tmp_path / "new.json", _run("after", [_list_load(SLOWER), na]))
    old = _write(tmp_path / "old.json", _run("before", [_list_load(EDGE), na]))
    done = _report(new, "--baseline", old, "--format", "junit", "-o", tmp_path / "j.xml")
    assert done.returncode == 0, done.stderr
    root = ET.parse(tmp_path / "j.xml").getroot()
    validate(root)  # the elements and attributes Jenkins, GitLab and junitparser read
    run_suite, baseline = root.findall("testsuite")
    assert counts(baseline) == {"tests": 2, "failures": 1, "errors": 0, "skipped": 1}
    assert run_suite.get("failures") == "1" and run_suite.get("tests") == "2"
    assert (baseline.get("name"), baseline.get("tests"), baseline.get("failures"),
            baseline.get("skipped")) == ("devicelab.baseline", "2", "1", "1")  # fmt: skip
    assert (root.get("tests"), root.get("failures")) == ("4", "2")
    failure = baseline.find("testcase[@name='conversation_list_load']/failure")
    assert failure is not None and failure.get("type") == "Regressed"
    assert "p95 199.2 ms → 235.1 ms" in (failure.get("message") or "")
    assert baseline.find("testcase[@name='battery_drain']/skipped") is not None
    props = {p.get("name"): p.get("value") for p in baseline.iter("property")}
    assert props["baseline.run.id"] == "before" and props["threshold_pct"] == "10"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--threshold", "5"], "--threshold compares with a baseline, and none was given"),
        (["--fail-on-regression"], "--fail-on-regression compares with a baseline"),
        (["--baseline", "OLD", "--threshold", "0"], "--threshold 0: expected a finite number"),
        (["--baseline", "OLD", "--threshold", "nan"], "--threshold nan: expected a finite"),
        (["--baseline", "missing.json"], "missing.json"),
    ],
)
def test_bad_baseline_options_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], said: str
) -> None:
    new = _write(tmp_path / "new.json", _run("after", [_list_load(EDGE)]))
    old = _write(tmp_path / "old.json", _run("before", [_list_load(EDGE)]))
    args = [str(old) if a == "OLD" else str(tmp_path / a) if a.endswith(".json") else a
            for a in args]  # fmt: skip
    done = _report(new, *args, "-o", tmp_path / "r.md")
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "r.md").exists()


def test_a_check_measured_without_a_target_is_unjudged_with_its_move() -> None:
    """The list load on 3G: a skip that keeps its value (no target) is compared, not
    passed over; nothing says which way is better, so it gets no verdict."""

    def untargeted(samples: list[float]) -> Check:
        return judge(check="conversation_list_load", title="Conversation list load",
                     category="latency", samples=samples, unit="ms", target=None)  # fmt: skip

    change = _only(_run("b", [untargeted(SLOWER)]), _run("a", [untargeted(EDGE)]),
                   "conversation_list_load")  # fmt: skip
    assert change.before is not None and change.before.status == "skip"
    assert change.verdict == "unjudged", change.why
    assert change.why.endswith("; no target says which way is better")
    assert change.change_pct == pytest.approx(18.0, abs=0.2)
