"""``--import``: merged results of Locust masters judged as local steps are.

The results here are generated (real HDR histograms, encoded as a master writes them);
test_load.py imports the file a real master wrote on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend_checks.load import hdr, load_checks
from backend_checks.load.imported import CPU_NOTE, import_results
from backend_checks.load.mix import mix_weights
from backend_checks.load.models import OpTally, RunShape, SecondTally, WorkerResult
from devicelab.config import load_targets
from devicelab.errors import BadInput

_CLI = [sys.executable, "-m", "devicelab", "backend", "load"]


def _encoded(values_ms: list[float]) -> str:
    histogram = hdr.new()
    for value in values_ms:
        histogram.record_value(int(value * 1000))
    return str(histogram.encode().decode("ascii"))


def _result(users: int, latency_ms: float, *, shape: bool = True, exhaustion: int = 0) -> str:
    mix = mix_weights("full")
    ok = 40 * users // 10  # 0.2 ops/s per user over 20 s
    ops = {
        name: OpTally(ok=ok * weight // 100, errors=0,
                      latency_hdr=_encoded([latency_ms * 0.5] * 90 + [latency_ms] * 10),
                      service_hdr=_encoded([latency_ms * 0.4] * 100))
        for name, weight in mix.items()
    }  # fmt: skip
    result = WorkerResult(
        users=users, connected=users - exhaustion, connect_failures=exhaustion,
        exhaustion=exhaustion, ops=ops, seconds=[
            SecondTally(t=t, ok=ok // 20, latency_hdr=_encoded([latency_ms])) for t in range(20)
        ],
        errors={"exhaustion: too many clients already": exhaustion} if exhaustion else {},
        elapsed_s=25.0,
        shape=RunShape(transport="rest", target="https://abc.supabase.co", mix=mix,
                       rate_per_user=0.2, duration_s=20, identities=users, workers=4,
                       started_at="2026-11-29T01:00:00+00:00",
                       finished_at="2026-11-29T01:00:25+00:00") if shape else None,
    )  # fmt: skip
    return result.model_dump_json()


def test_two_master_results_become_the_two_checks(tmp_path: Path) -> None:
    (tmp_path / "s100.json").write_text(_result(100, 30.0))
    (tmp_path / "s1000.json").write_text(_result(1000, 30.0, exhaustion=3))
    run = import_results([tmp_path / "s1000.json", tmp_path / "s100.json"])
    assert [s.users for s in run.steps] == [100, 1000]
    step = run.steps[0]
    assert step.transport == "rest" and step.mode == "fixed-rate" and step.rate_per_s == 20
    assert step.processes == 4 and run.target == "https://abc.supabase.co"
    assert step.ops["fetch_messages"].p95_ms == pytest.approx(30.0, rel=0.01)
    assert step.total.throughput_per_s == pytest.approx(sum(o.count for o in step.ops.values())
                                                        / 20, rel=0.01)  # fmt: skip
    checks, series = load_checks(run, load_targets())
    by_id = {c.id: c for c in checks}
    assert by_id["load_100"].status == "pass" and by_id["load_100"].value == 100
    assert by_id["load_1000"].status == "fail" and by_id["load_1000"].value == 100
    assert "no connection exhaustion" in by_id["load_1000"].reason
    cpu = next(c for c in by_id["load_100"].evidence["criteria"] if c["name"] == "database CPU")
    assert cpu["ok"] is None and "not measured" in cpu["detail"]
    assert CPU_NOTE in by_id["load_100"].evidence["notes"]
    assert not by_id["load_100"].evidence["pg_stat_statements_delta"]["statements_available"]
    assert {s.name for s in series} == {"load_100.throughput", "load_100.p95",
                                        "load_1000.throughput", "load_1000.p95"}  # fmt: skip


def test_a_result_without_its_shape_needs_the_window(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(_result(100, 30.0, shape=False))
    with pytest.raises(BadInput, match="how long its window was"):
        import_results([path])
    run = import_results([path], duration_s=20)
    assert run.steps[0].transport == "sql" and run.steps[0].duration_s == 20
    with pytest.raises(BadInput, match="two results for 100 users"):
        import_results([path, path], duration_s=20)
    (tmp_path / "bad.json").write_text(json.dumps({"users": 1}))
    with pytest.raises(BadInput, match="not a Locust master's load result"):
        import_results([tmp_path / "bad.json"])


def test_cli_import_writes_results_and_reports(tmp_path: Path) -> None:
    (tmp_path / "s100.json").write_text(_result(100, 30.0))
    (tmp_path / "s1000.json").write_text(_result(1000, 400.0))
    out = tmp_path / "out"
    done = subprocess.run(
        [*_CLI, "--import", str(tmp_path / "s100.json"), "--import",
         str(tmp_path / "s1000.json"), "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # 1000 users: p95 400 ms is over every target
    results = json.loads((out / "results.json").read_text())
    statuses = {c["id"]: c["status"] for c in results["checks"]}
    assert statuses == {"load_100": "pass", "load_1000": "fail"}
    assert (out / "report.md").is_file() and (out / "junit.xml").is_file()
    assert "not measured" in done.stdout
    missing = subprocess.run([*_CLI, "--import", str(tmp_path / "none.json")],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
