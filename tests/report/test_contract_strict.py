"""Loading a results.json is as strict as its published JSON Schema: wrong types, a
missing ``schema`` and non-finite numbers are refused in one line naming the field; a
check measured twice is shown twice; a broken default targets.yaml is named in the report.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import ConfigError
from devicelab.models import Check, Results, RunInfo
from devicelab.models.results import json_schema
from devicelab.report import load_results, render_html, render_markdown

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "devicelab/schemas/results.schema.json").read_text())


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    return path


def _refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_results(path)
    return caught.value


@pytest.mark.parametrize(
    ("mutate", "field", "says"),
    [
        (lambda d: d["checks"][1].update(value="552"), "checks[1].value", 'found "552"'),
        (lambda d: d["checks"][1].update(value=True), "checks[1].value", "found true"),
        (
            lambda d: d["checks"][0]["samples"].__setitem__(2, "3"),
            "checks[0].samples[2]",
            'found "3"',
        ),
        (lambda d: d["checks"][0]["target"].update(value=False), "checks[0].target.value", ""),
        (lambda d: d["run"]["network"].update(rtt_ms="170"), "run.network.rtt_ms", 'found "170"'),
        (lambda d: d["run"].update(started_at=1700000000), "run.started_at", "datetime"),
        (lambda d: d["series"][0]["t"].__setitem__(0, True), "series[0].t[0]", "found true"),
        (lambda d: d["summary"].update(fail="1"), "summary.fail", 'found "1"'),
    ],
)
def test_wrong_types_are_refused_naming_the_field(
    raw: dict[str, Any], tmp_path: Path, mutate: Callable[[dict[str, Any]], None], field: str,
    says: str,
) -> None:  # fmt: skip
    mutate(raw)
    error = _refused(_write(tmp_path, raw))
    assert error.field == field, str(error)
    assert str(error).startswith(f"{tmp_path / 'results.json'}: {field}: ") and says in str(error)
    assert "\n" not in str(error)


def test_the_cli_refuses_a_string_value_in_one_line(raw: dict[str, Any], tmp_path: Path) -> None:
    raw["checks"][3]["value"] = "552"
    path = _write(tmp_path, raw)
    done = _run_cli(["report", str(path), "--format", "md"])
    assert done.returncode == 2 and done.stdout == "", done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "checks[3].value: input should be a valid number" in lines[0]
    assert "Traceback" not in done.stderr


def test_the_cli_echoes_a_wrong_value_as_json_spells_it(
    raw: dict[str, Any], tmp_path: Path
) -> None:
    # An outside tester: "checks[1].value: ... found True" for the file's `true`.
    raw["checks"][1]["value"] = True
    done = _run_cli(["report", str(_write(tmp_path, raw)), "--format", "md"])
    assert done.returncode == 2, done.stderr
    assert "checks[1].value: input should be a valid number" in done.stderr, done.stderr
    assert "found true" in done.stderr and "True" not in done.stderr, done.stderr


def test_our_own_writer_round_trips(tmp_path: Path) -> None:
    run = RunInfo(
        id="r", kind="device", started_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        finished_at=None, devicelab_version="0.1.0",
    )  # fmt: skip
    checks = [
        Check(id="a", title="A", category="c", status="pass", value=250.125, samples=[1, 2.5]),
        Check(id="b", title="B", category="c", status="pass", value=3, unit="ms"),
        Check(id="c", title="C", category="c", status="skip", value=None, evidence={"n": None}),
    ]
    results = Results(run=run, checks=checks)
    path = tmp_path / "results.json"
    path.write_text(results.to_json())
    assert load_results(path) == results


def test_the_published_schema_requires_what_the_loader_requires(
    raw: dict[str, Any], tmp_path: Path
) -> None:
    """Each field the schema requires is refused when missing; each it does not is not."""
    assert "schema" in SCHEMA["required"] and "schema" in json_schema()["required"]
    defs = SCHEMA["$defs"]
    places: list[tuple[dict[str, Any], Callable[[dict[str, Any]], dict[str, Any]]]] = [
        (SCHEMA, lambda d: d),
        (defs["RunInfo"], lambda d: d["run"]),
        (defs["Check"], lambda d: d["checks"][0]),
        (defs["CheckTarget"], lambda d: d["checks"][0]["target"]),
    ]
    for schema, where in places:
        for name in schema["properties"]:
            data = copy.deepcopy(raw)
            where(data).pop(name, None)
            path = _write(tmp_path, data)
            if name in schema.get("required", []):
                with pytest.raises(ConfigError, match="missing required field"):
                    load_results(path)
            else:
                load_results(path)


@pytest.mark.parametrize(
    ("token", "put", "field"),
    [
        ("NaN", lambda d: d["checks"][3].update(value="@"), "checks[3].value"),
        ("-Infinity", lambda d: d["checks"][0]["evidence"].update(x=[1, "@"]),
         "checks[0].evidence.x[1]"),
        ("1e999", lambda d: d["series"][0]["v"].__setitem__(5, "@"), "series[0].v[5]"),
        ("9" * 5000, lambda d: d["run"]["network"].update(loss_pct="@"),
         "run.network.loss_pct"),
    ],
)  # fmt: skip
def test_a_number_outside_the_contract_is_refused_naming_its_field(
    raw: dict[str, Any], tmp_path: Path, token: str, put: Callable[[dict[str, Any]], None],
    field: str,
) -> None:  # fmt: skip
    put(raw)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(raw).replace('"@"', token))
    error = _refused(path)
    assert error.field == field, str(error)
    assert str(error).startswith(f"{path}: {field}: not a number the contract allows: ")


def _twice(raw: dict[str, Any]) -> Results:
    again = copy.deepcopy(raw["checks"][0])
    again.update(status="fail", value=612.5, samples=[], summary=None, reason="on fast-3g")
    raw["checks"].append(again)
    return Results.model_validate(raw)


def test_a_check_measured_twice_shows_both_verdicts_in_the_matrix(
    raw: dict[str, Any], tmp_path: Path
) -> None:
    """A session may measure a check again (LabSession.measure on a switched link): the
    file loads, and the matrix shows the second verdict instead of dropping it."""
    path = _write(tmp_path, json.loads(_twice(raw).to_json()))
    results = load_results(path)
    md = render_markdown(results)
    row = next(line for line in md.splitlines() if "(`message_delivery`)" in line)
    assert "✅ 250.6 ms" in row and "❌ 612.5 ms" in row, row
    html = render_html(results)
    matrix = html.split("Story targets", 1)[1].split("</table>", 1)[0]
    assert "250.6 ms" in matrix and "612.5 ms" in matrix
    assert html.count('id="check-message_delivery"') == 1
    assert html.count('id="check-message_delivery-2"') == 1


def _run_cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicelab", *args], capture_output=True, text=True,
        cwd=ROOT, timeout=60, check=False, env={**os.environ, **env},
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_a_broken_default_target_book_is_named_in_the_report(
    results_path: Path, tmp_path: Path, fmt: str
) -> None:
    home = tmp_path / "lab"
    (home / "profiles").mkdir(parents=True)
    broken = home / "profiles" / "targets.yaml"
    broken.write_text("targets:\n  - metric: [unclosed\n")
    done = _run_cli(["report", str(results_path), "--format", fmt], DEVICELAB_HOME=str(home))
    assert done.returncode == 0, done.stderr
    assert "warning: no story targets" in done.stderr and str(broken) in done.stderr
    assert "could not be read" in done.stdout and str(broken) in done.stdout
    assert "No targets.yaml was given" not in done.stdout
