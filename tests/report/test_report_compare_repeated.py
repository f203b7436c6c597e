"""A check id measured more than once in a run (a pytest lab session: once per test, or
again on a link the test switched) compared with a baseline: every measurement has its
row, paired with the baseline's on the same link, and one measured on another link is
named as not comparable, never judged a regression.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devicelab.config import load_targets
from devicelab.models import Check, DeviceInfo, NetworkInfo, Results, RunInfo
from devicelab.report import compare, render_html, render_junit, render_markdown
from devicelab.targets import judge, resolve

#: message_delivery on 4G (ms, 20 samples): p95 187.9 ms in the baseline...
ON_4G = [150.2, 151.0, 152.3, 153.1, 154.0, 155.6, 156.2, 157.8, 158.1, 159.4,
         160.0, 161.3, 162.5, 163.9, 165.0, 167.2, 170.4, 175.1, 187.6, 193.6]  # fmt: skip
#: ...about the same in the new session's first test, and far slower on slow-3g.
AGAIN_4G = [round(v + 0.7, 1) for v in ON_4G]
ON_SLOW_3G = [round(v * 2.5, 1) for v in ON_4G]


def _delivery(samples: list[float], test: str, link: str | None = None) -> Check:
    evidence: dict[str, Any] = {"test": f"tests/perf/test_chat.py::{test}"}
    if link is not None:
        evidence["link_profile"] = link
    return judge(check="message_delivery", title="Message delivery", category="latency",
                 samples=samples, unit="ms", column="4g", evidence=evidence,
                 target=resolve(load_targets(), "message_delivery", "web", "4g"))  # fmt: skip


def _session(run_id: str, checks: list[Check]) -> Results:
    return Results(run=RunInfo(
        id=run_id, kind="device", devicelab_version="0.1.0",
        started_at=datetime(2026, 12, 1, 20, 0, tzinfo=UTC),
        finished_at=datetime(2026, 12, 1, 20, 7, tzinfo=UTC),
        device=DeviceInfo(id="web", platform="web", model="Chromium", os="Debian 12"),
        network=NetworkInfo(name="4g")), checks=checks)  # fmt: skip


def _repro() -> tuple[Results, Results]:
    """The auditor's case: test_a on 4G, test_b on slow-3g, against a plain 4G session."""
    baseline = _session("before", [_delivery(ON_4G, "test_a")])
    results = _session(
        "after", [_delivery(AGAIN_4G, "test_a"), _delivery(ON_SLOW_3G, "test_b", "slow-3g")]
    )
    return results, baseline


def test_every_measurement_has_a_row_and_another_link_is_not_compared() -> None:
    results, baseline = _repro()
    comparison = compare(results, baseline)
    assert len(comparison.changes) == 2, comparison.changes
    assert not comparison.regressed
    on_4g, slow = sorted(comparison.changes, key=lambda c: c.nth)
    assert (on_4g.nth, on_4g.name, on_4g.link) == (1, "message_delivery #1", "")
    assert on_4g.verdict == "unchanged", on_4g.why
    assert on_4g.before is not None and on_4g.before.samples == ON_4G
    assert on_4g.after is not None and on_4g.after.samples == AGAIN_4G
    assert slow.verdict == "not compared" and slow.name == "message_delivery #2"
    assert slow.link == "slow-3g" and slow.after is not None and slow.before is None
    assert slow.why == (
        "measured on slow-3g (switched by the test) in this run; the baseline measured it "
        "once, on 4g: another link, not comparable"
    )
    # Said at the top, with the runs that differ by design.
    assert comparison.notes == [f"message_delivery #2: {slow.why}"]


def test_the_reports_show_both_measurements(tmp_path: Path) -> None:
    results, baseline = _repro()
    comparison = compare(results, baseline)
    markdown = render_markdown(results, comparison=comparison)
    assert "(`message_delivery #1`)" in markdown
    assert "(`message_delivery #2` on `slow-3g`)" in markdown
    assert "> message_delivery \\#2: measured on slow-3g" in markdown
    assert "<code>message_delivery #2</code> on <code>slow-3g</code>" in render_html(
        results, comparison=comparison
    )
    root = ET.fromstring(render_junit(results, comparison=comparison))
    (suite,) = [s for s in root.iter("testsuite") if s.get("name") == "devicelab.baseline"]
    names = [case.get("name") for case in suite.iter("testcase")]
    assert names == ["message_delivery #1", "message_delivery #2"]
    assert suite.get("failures") == "0" and suite.get("skipped") == "1"


def test_fail_on_regression_is_not_set_off_by_a_switched_link(tmp_path: Path) -> None:
    results, baseline = _repro()
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    new.write_text(json.dumps(results.model_dump(mode="json", by_alias=True)))
    old.write_text(json.dumps(baseline.model_dump(mode="json", by_alias=True)))
    done = subprocess.run(
        [sys.executable, "-m", "devicelab", "report", str(new), "--baseline", str(old),
         "--fail-on-regression", "-o", str(tmp_path / "r.md")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "0 regressed, 0 improved, 1 unchanged, 0 unjudged, 1 not compared" in done.stderr
    assert "| — | ✅ 469.8 ms | not compared |" in (tmp_path / "r.md").read_text()


def test_measurements_pair_by_link_and_test_whatever_their_order() -> None:
    # The baseline measured slow-3g first; this run 4G first: each meets its own link.
    slower = [v * 1.5 for v in ON_SLOW_3G]
    baseline = _session(
        "before", [_delivery(ON_SLOW_3G, "test_b", "slow-3g"), _delivery(ON_4G, "test_a")]
    )
    results = _session(
        "after", [_delivery(ON_4G, "test_a"), _delivery(slower, "test_b", "slow-3g")]
    )
    changes = compare(results, baseline).changes
    assert len(changes) == 2
    slow = next(c for c in changes if c.link == "slow-3g")
    assert slow.verdict == "regressed", slow.why  # slow-3g against slow-3g: judged
    assert slow.before is not None and slow.before.samples == ON_SLOW_3G
    assert slow.after is not None and slow.after.evidence["test"].endswith("test_b")
    fast = next(c for c in changes if not c.link)
    assert fast.verdict == "unchanged" and fast.before is not None
    assert fast.before.samples == ON_4G


def test_a_measurement_on_a_cut_link_is_not_compared_with_one_on_the_whole_link() -> None:
    cut = _delivery(ON_SLOW_3G, "test_c")
    cut = cut.model_copy(update={"evidence": {**cut.evidence, "link_offline": True}})
    changes = compare(
        _session("after", [cut]), _session("before", [_delivery(ON_4G, "test_a")])
    ).changes
    assert [c.verdict for c in changes] == ["not compared"]
    assert "on 4g, cut by the test in this run, on 4g in the baseline" in changes[0].why


def test_a_run_measured_once_keeps_its_rows_as_they_were() -> None:
    changes = compare(
        _session("after", [_delivery(AGAIN_4G, "test_a")]),
        _session("before", [_delivery(ON_4G, "test_a")]),
    ).changes
    assert [(c.name, c.nth, c.link) for c in changes] == [("message_delivery", 0, "")]
    # More measurements in this run than in the baseline, all on its network: each shown.
    more = compare(
        _session("after", [_delivery(AGAIN_4G, "test_a"), _delivery(AGAIN_4G, "test_b")]),
        _session("before", [_delivery(ON_4G, "test_a")]),
    ).changes
    assert [c.verdict for c in more] == ["unchanged", "not compared"]
    assert more[1].why == (
        "new in this run: the baseline measured it once, each paired with another of this run's"
    )


def test_an_id_only_one_run_has_is_new_whatever_its_link() -> None:
    comparison = compare(
        _session("after", [_delivery(ON_SLOW_3G, "test_b", "slow-3g")]), _session("before", [])
    )
    (change,) = comparison.changes
    assert change.verdict == "not compared" and change.link == "slow-3g"
    assert change.why == "new in this run: not in the baseline"
    assert comparison.notes == []  # no other link to differ from
