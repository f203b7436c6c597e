"""What a report says a run added up to, and runs written by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devicelab.models import Results
from devicelab.report import render_html, render_junit, render_markdown
from devicelab.report._common import verdict_text


def _with(raw: dict[str, Any], statuses: list[str]) -> Results:
    checks = raw["checks"]
    kept = [dict(checks[0], id=f"c{i}", status=s) for i, s in enumerate(statuses)]
    return Results.model_validate({**raw, "checks": kept, "summary": {}})


def test_a_run_of_skips_alone_is_not_said_to_have_passed(raw: dict[str, Any]) -> None:
    # "2 checks: 0 pass ... 2 skip — all checks passed (exit code 0)".
    assert verdict_text(_with(raw, ["skip", "skip"])) == "no check ran, 2 skipped (exit code 0)"
    mixed = _with(raw, ["pass", "skip"])
    assert verdict_text(mixed) == "every check that ran passed, 1 skipped (exit code 0)"
    assert verdict_text(_with(raw, ["pass", "pass"])) == "all checks passed (exit code 0)"
    assert "all checks passed" not in render_markdown(_with(raw, ["skip"]))


def test_a_stopped_run_names_every_exit_it_can_have(raw: dict[str, Any]) -> None:
    stopped = _with(raw, ["pass"])
    stopped.run.finished_at = None
    said = verdict_text(stopped)
    assert "never exits 0: 130, 143 or 129 after Ctrl-C, SIGTERM or SIGHUP" in said
    assert "3 when a peer could not start" in said  # a run that could not start is stopped


def test_a_time_without_an_offset_is_read_as_utc(
    raw: dict[str, Any], tmp_path: Path, cli: Any
) -> None:
    # One naive and one aware time: a TypeError traceback, exit 1, in every format.
    raw["run"]["started_at"] = "2026-11-30T19:46:27"
    raw["run"]["finished_at"] = "2026-11-30T19:48:27Z"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(raw))
    results = Results.model_validate(raw)
    assert results.run.started_at.utcoffset() is not None
    for render in (render_markdown, render_html, render_junit):
        assert render(results)
    assert 'time="120.000"' in render_junit(results)
    done = cli("report", str(path), "--format", "junit")
    assert done.returncode == 0, done.stderr
