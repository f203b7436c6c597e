"""A session that stops while it starts leaves no previous run's files reading as its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from devicelab.errors import ToolMissing
from devicelab.lab import Lab
from devicelab.report import load_results

FIXTURE = Path(__file__).parents[1] / "report" / "data" / "results.json"


def _lab(tmp_path: Path) -> Lab:
    inventory = tmp_path / "inventory.yaml"
    browserless = {"platform": "web", "model": "Chromium", "os": "Debian 12",
                   "browser": str(tmp_path / "no-chromium")}  # fmt: skip
    inventory.write_text(yaml.safe_dump({"devices": {"web": browserless}}))
    return Lab("web", "4g", inventory=inventory)


def test_the_previous_runs_set_is_replaced_by_this_runs_unfinished_one(tmp_path: Path) -> None:
    # It kept the previous run's results.json and reports, finished and passed.
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(FIXTURE, out / "results.json")
    (out / "report.md").write_text("the previous run")
    (out / "samples.jsonl").write_text('{"t": 1.0, "metric": "cpu_pct", "value": 3.0}\n')
    previous = load_results(out / "results.json").run.id
    with pytest.raises(ToolMissing), _lab(tmp_path).session(out):
        pass
    results = load_results(out / "results.json")
    assert results.run.id != previous and results.run.finished_at is None
    assert results.checks == []
    assert "unfinished" in (out / "report.md").read_text()
    assert not (out / "samples.jsonl").exists(), "the previous run's samples read as this run's"


def test_a_run_that_measures_nothing_leaves_no_previous_samples(tmp_path: Path) -> None:
    """battery_drain does not apply on web: nothing starts, the set is this run's skips."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(FIXTURE, out / "results.json")
    (out / "samples.jsonl").write_text('{"t": 1.0, "metric": "cpu_pct", "value": 3.0}\n')
    results = Lab("web", "4g", scenarios=["battery_drain"]).run(out)
    assert [c.status for c in results.checks] == ["skip"]
    assert load_results(out / "results.json").run.id == results.run.id
    assert not (out / "samples.jsonl").exists()


def test_an_empty_out_folder_stays_empty(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ToolMissing), _lab(tmp_path).session(out):
        pass
    assert not (out / "results.json").exists()
