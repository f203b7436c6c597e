"""A pytest lab session's reports speak of pytest's exit code, not devicelab run's.

Its checks name the test that measured them (``evidence.test``, set by
``LabSession.measure`` under pytest): that is how a report tells a session from a run.
A stopped session exits 2 (pytest's code), not 130/143/129; one whose checks all passed
exits 1 when a test's own assertion failed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from devicelab.models import Results
from devicelab.report import _common, render_html, render_junit, render_markdown
from devicelab.report._common import verdict_text

CLI_STOPPED = "130, 143 or 129 after Ctrl-C, SIGTERM or SIGHUP"


def _session(raw: dict[str, Any], statuses: list[str], *, test: bool = True) -> Results:
    checks = raw["checks"]
    kept = []
    for i, status in enumerate(statuses):
        evidence = {"test": f"tests/perf/test_chat.py::test_{i}"} if test else {}
        kept.append(dict(checks[0], id=f"c{i}", status=status, evidence=evidence))
    return Results.model_validate({**raw, "checks": kept, "summary": {}})


def _everywhere(results: Results) -> list[str]:
    """The verdict as each report shows it: Markdown, HTML and the JUnit system-out."""
    root = ET.fromstring(render_junit(results))
    junit = "\n".join(e.text or "" for e in root.iter() if e.tag in ("system-out", "error"))
    return [render_markdown(results), render_html(results), junit]


def test_a_stopped_pytest_session_says_it_exits_2(raw: dict[str, Any]) -> None:
    stopped = _session(raw, ["pass"])
    stopped.run.finished_at = None
    said = verdict_text(stopped)
    assert CLI_STOPPED not in said
    assert "a stopped pytest session exits 2" in said, said
    assert said.endswith("of the checks it got to, none failed")
    for report in _everywhere(stopped):
        assert "a stopped pytest session exits 2" in report
        assert CLI_STOPPED not in report


def test_a_pytest_session_whose_checks_passed_names_pytests_exit_code(
    raw: dict[str, Any],
) -> None:
    # pytest exits 1 when a test's own assertion failed: "exit code 0" was wrong there.
    passed = _session(raw, ["pass", "pass"])
    assert _common.is_pytest_session(passed)
    assert not _common.is_pytest_session(_session(raw, ["pass"], test=False))
    said = verdict_text(passed)
    assert said.startswith("all checks passed (the exit code is pytest's")
    assert "exit code 0" not in said
    assert "1 when a test failed" in said
    for report in _everywhere(passed):
        assert "exit code 0" not in report
    skipped = verdict_text(_session(raw, ["pass", "skip"]))
    assert skipped.startswith("every check that ran passed, 1 skipped (the exit code is pytest")
    failed = verdict_text(_session(raw, ["fail", "pass"]))
    assert failed.startswith("a check failed (the exit code is pytest's") and "(exit" not in failed


def test_a_runs_wording_is_kept(raw: dict[str, Any]) -> None:
    run = _session(raw, ["pass", "pass"], test=False)
    assert verdict_text(run) == "all checks passed (exit code 0)"
    run.run.finished_at = None
    assert CLI_STOPPED in verdict_text(run)
