"""What a report may never do with its inputs: replace them, or repeat a secret they hold.

A results.json is written by devicelab, but also edited by hand, merged by scripts and
handed around: any text in it may hold a DSN with its password, a JWT or a key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devicelab.models import Results
from devicelab.report import compare, load_results, render_html, render_junit, render_markdown

SECRETS = {
    "dsn": ("postgresql://admin:PWDSN1@db.example.com/x", "PWDSN1"),
    "jwt": ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4eXoifQ.SIGJWT1abcdef", "SIGJWT1"),
    "bearer": ("Authorization: Bearer BTOK1.xyz", "BTOK1"),
    "apikey": ("x?apikey=AKQ1z&y=1", "AKQ1"),
}

#: Every text of the contract a producer or an editor may fill, and how to set it.
FIELDS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "run.id": lambda d, s: d["run"].__setitem__("id", s),
    "run.devicelab_version": lambda d, s: d["run"].__setitem__("devicelab_version", s),
    "device.id": lambda d, s: d["run"]["device"].__setitem__("id", s),
    "device.model": lambda d, s: d["run"]["device"].__setitem__("model", s),
    "device.os": lambda d, s: d["run"]["device"].__setitem__("os", s),
    "network.name": lambda d, s: d["run"]["network"].__setitem__("name", s),
    "check.id": lambda d, s: d["checks"][0].__setitem__("id", s),
    "check.category": lambda d, s: d["checks"][0].__setitem__("category", s),
    "check.unit": lambda d, s: d["checks"][0].__setitem__("unit", s),
    "target.source": lambda d, s: d["checks"][0]["target"].__setitem__("source", s),
    "target.unit": lambda d, s: d["checks"][0]["target"].__setitem__("unit", s),
    "target.column": lambda d, s: d["checks"][0]["target"].__setitem__("column", s),
    "series.name": lambda d, s: d["series"][0].__setitem__("name", s),
    "series.unit": lambda d, s: d["series"][0].__setitem__("unit", s),
}


def _bent(raw: dict[str, Any], field: str, secret: str) -> Results:
    data = json.loads(json.dumps(raw))
    FIELDS[field](data, secret)
    return Results.model_validate(data)


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_no_text_of_the_file_carries_a_secret_into_a_report(
    raw: dict[str, Any], field: str
) -> None:
    for secret, marker in SECRETS.values():
        results = _bent(raw, field, secret)
        comparison = compare(results, results)
        texts = {
            "md": render_markdown(results, comparison=comparison),
            "html": render_html(results, comparison=comparison),
            "junit": render_junit(results, comparison=comparison),
        }
        for kind, text in texts.items():
            assert marker not in text, f"{field} leaks {marker} into the {kind} report"
            assert "***" in text, f"{field}: the {kind} report lost the masked text"


def test_the_comparison_line_on_stderr_masks_and_defuses(
    raw: dict[str, Any], tmp_path: Path, cli: Any
) -> None:
    old = json.loads(json.dumps(raw))
    old["run"]["id"] = "base postgresql://u:BasePw9@db/x"
    new = json.loads(json.dumps(raw))
    new["run"]["id"] = "now"
    for data in (old, new):  # a check id that would retitle the terminal, with a token
        data["checks"][0]["id"] = "message_delivery\x1b]0;PWNED\x07 token=CheckTok1"
    new["checks"][0]["value"] = old["checks"][0]["value"] * 10
    new["checks"][0]["samples"] = [v * 10 for v in old["checks"][0]["samples"]]
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    done = cli("report", str(tmp_path / "new.json"), "--baseline", str(tmp_path / "old.json"),
               "-o", str(tmp_path / "cmp.md"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "against baseline" in done.stderr
    assert "regressed: message_delivery" in done.stderr
    for leaked in ("BasePw9", "CheckTok1", "\x1b", "\x07"):
        assert leaked not in done.stderr


def test_an_error_quoting_the_file_masks_and_cuts_what_it_quotes(
    raw: dict[str, Any], tmp_path: Path, cli: Any
) -> None:
    cases = {
        "backend.json": lambda d: d["run"].__setitem__("backend", "postgresql://a:LeakPw1@h/db"),
        "key.json": lambda d: d["run"].__setitem__("password=KeyPw1 x", 1),
        "long.json": lambda d: d["run"].__setitem__("x" * 5000, 1),
    }
    for name, bend in cases.items():
        data = json.loads(json.dumps(raw))
        bend(data)
        (tmp_path / name).write_text(json.dumps(data))
        done = cli("report", str(tmp_path / name))
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        line = done.stderr.strip()
        assert "\n" not in line and len(line) < 500, line
        assert "LeakPw1" not in line and "KeyPw1" not in line
    assert "***" in cli("report", str(tmp_path / "backend.json")).stderr


@pytest.mark.parametrize("how", ["same path", "another spelling", "a link to it"])
def test_o_naming_the_results_file_is_refused_and_keeps_it(
    results_path: Path, tmp_path: Path, cli: Any, how: str
) -> None:
    source = tmp_path / "results.json"
    source.write_bytes(results_path.read_bytes())
    before = source.read_bytes()
    output = {
        "same path": source,
        "another spelling": tmp_path / "." / "results.json",
        "a link to it": tmp_path / "link.json",
    }[how]
    if how == "a link to it":
        output.symlink_to(source)
    done = cli("report", str(source), "-o", str(output))
    assert done.returncode == 2, done.stderr
    assert "would replace it" in done.stderr
    assert source.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_o_naming_the_baseline_is_refused_and_keeps_it(
    results_path: Path, tmp_path: Path, cli: Any
) -> None:
    baseline = tmp_path / "old.json"
    baseline.write_bytes(results_path.read_bytes())
    done = cli("report", str(results_path), "--baseline", str(baseline), "-o", str(baseline))
    assert done.returncode == 2, done.stderr
    assert "--baseline file" in done.stderr
    assert baseline.read_bytes() == results_path.read_bytes()


@pytest.mark.parametrize("started", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_junit_takes_times_at_the_ends_of_the_calendar(raw: dict[str, Any], started: str) -> None:
    data = json.loads(json.dumps(raw))
    data["run"]["started_at"] = started
    data["run"]["finished_at"] = None
    text = render_junit(Results.model_validate(data))
    assert 'timestamp="' in text


def test_a_file_too_big_to_be_results_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, results_path: Path
) -> None:
    from devicelab import report

    monkeypatch.setattr(report, "_MAX_BYTES", 1000)
    with pytest.raises(report.ConfigError, match="larger than"):
        load_results(results_path)  # some KB: over this test's limit


def test_a_dangling_link_names_the_folder_it_points_into(
    results_path: Path, tmp_path: Path, cli: Any
) -> None:
    link = tmp_path / "report.md"
    link.symlink_to("/nonexistent-devicelab/dir/file.md")
    done = cli("report", str(results_path), "-o", str(link))
    assert done.returncode == 2
    assert "/nonexistent-devicelab/dir: no such folder" in done.stderr
