"""The pydantic models: network profiles, targets, results and its JSON Schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from devicelab.models import (
    Check,
    NetworkProfile,
    Results,
    RunInfo,
    Series,
    Target,
    percentile,
    summarize,
)
from devicelab.models.results import json_schema

ROOT = Path(__file__).resolve().parents[2]


def test_rtt_splits_into_one_way_delays() -> None:
    p = NetworkProfile(label="4G", source="s", rtt_ms=170, down_kbps=10000, up_kbps=5000)
    assert (p.down_delay_ms, p.up_delay_ms, p.rtt) == (85, 85, 170)
    assert p.down_bytes_per_s == 1_250_000
    assert p.ideal_download_s(1_000_000) == pytest.approx(0.17 + 0.8)
    assert p.ideal_upload_s(1_000_000) == pytest.approx(0.17 + 1.6)
    edge = NetworkProfile(label="E", source="s", down_delay_ms=400, up_delay_ms=440)
    assert edge.rtt == 840
    with pytest.raises(ValidationError, match="is not down_delay_ms"):
        NetworkProfile(label="E", source="s", rtt_ms=100, down_delay_ms=40, up_delay_ms=40)
    with pytest.raises(ValidationError):
        NetworkProfile(label="x", source="s", loss_pct=100)


def test_story_profiles_are_exact() -> None:
    from devicelab.config import load_networks

    p = load_networks(ROOT / "profiles/networks.yaml").profiles
    story = {
        "slow-3g": (400, 400, 400),
        "fast-3g": (300, 1600, 750),
        "4g": (170, 10000, 5000),
        "5g": (10, 100000, 50000),
    }
    for name, (rtt, down, up) in story.items():
        assert (p[name].rtt, p[name].down_kbps, p[name].up_kbps) == (rtt, down, up), name
        assert "story" in p[name].source
    assert p["devtools-slow-4g"].down_bytes_per_s == 180_000
    assert p["devtools-slow-4g"].up_bytes_per_s == 84_375
    assert p["devtools-fast-4g"].down_bytes_per_s == 1_012_500
    assert (p["nlc-edge"].down_delay_ms, p["nlc-edge"].up_delay_ms) == (400, 440)
    assert p["nlc-very-bad-network"].loss_pct == 10
    assert not p["none"].shaped and p["offline"].offline


def test_percentiles_match_linear_interpolation() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([3.0], 95) == 3.0
    stats = summarize([5.0, 1.0, 3.0])
    assert stats is not None and (stats.min, stats.p50, stats.max, stats.mean) == (1, 3, 5, 3)
    assert summarize([]) is None
    with pytest.raises(ValueError):
        percentile([], 50)


def test_target_ops_and_label() -> None:
    t = Target(check="x", op="<", value=500, unit="ms", source="s")
    assert t.holds(499.9) and not t.holds(500)
    assert Target(check="x", op=">", value=95, unit="%", source="s").holds(95.5)
    assert t.label() == "< 500 ms"
    assert Target(check="x", applies=False, source="s").label() == "N/A"


def run_info() -> RunInfo:
    return RunInfo(
        id="r1", kind="device", started_at=datetime(2026, 1, 1, tzinfo=UTC),
        devicelab_version="0.1.0",
    )  # fmt: skip


def test_results_summary_is_recounted_and_round_trips() -> None:
    checks = [
        Check(id="a", title="A", category="c", status="pass"),
        Check(id="b", title="B", category="c", status="fail"),
        Check(id="c", title="C", category="c", status="fail"),
        Check(id="d", title="D", category="c", status="skip"),
    ]
    results = Results(run=run_info(), checks=checks)
    data = json.loads(results.to_json())
    assert data["schema"] == "devicelab.results/1"
    assert data["summary"] == {"pass": 1, "fail": 2, "skip": 1, "error": 0}
    assert results.exit_code() == 1
    data["summary"] = {"pass": 9, "fail": 0, "skip": 0, "error": 0}
    again = Results.model_validate(data)
    assert again.summary.fail == 2
    assert Results(run=run_info()).exit_code() == 0
    errored = Results(
        run=run_info(), checks=[Check(id="e", title="E", category="c", status="error")]
    )
    assert errored.exit_code() == 3


def test_results_reject_what_the_contract_forbids() -> None:
    base = json.loads(Results(run=run_info()).to_json())
    for broken in (
        {**base, "schema": "devicelab.results/2"},
        {**base, "extra": 1},
        {**base, "checks": [{"id": "a", "title": "A", "category": "c", "status": "ok"}]},
    ):
        with pytest.raises(ValidationError):
            Results.model_validate(broken)
    with pytest.raises(ValidationError, match="t has 2 points"):
        Series(name="m", unit="MB", t=[0, 1], v=[1])


def test_committed_json_schema_is_generated_from_the_model() -> None:
    committed = json.loads((ROOT / "devicelab/schemas/results.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), (
        "regenerate: python -m devicelab.models.results"
    )
    assert committed["$id"] == "devicelab.results/1"
    assert set(committed["required"]) >= {"run"}


def test_a_failed_check_wins_over_one_that_could_not_run_in_a_run_and_a_farm() -> None:
    from datetime import UTC, datetime

    from devicelab.farm import FarmDevice, FarmResult

    both = [
        Check(id=i, title=i, category="c", status=s) for i, s in (("f", "fail"), ("e", "error"))
    ]
    assert Results(run=run_info(), checks=both).exit_code() == 1

    def farm(*codes: int) -> int:
        rows = [FarmDevice(id=f"p{i}", platform="android", model="m", exit_code=code,
                           status="error") for i, code in enumerate(codes)]  # fmt: skip
        now = datetime.now(UTC)
        return FarmResult(started_at=now, finished_at=now, network="4g", duration_s=1.0,
                          devices=rows).exit_code()  # fmt: skip

    # The farm said 3 for a phone that failed its drain beside one that was absent.
    assert (farm(0, 1, 3), farm(0, 3, 130), farm(0, 2), farm(0, 0), farm()) == (1, 3, 2, 0, 0)
