"""Every goal a bench prints is judged in load.py's words (meets/misses) and a miss is
exit 1: the judging functions, pure, and load.py's summary taken from one statistic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as module ``bench_<name>`` (its folder on sys.path for _cli)."""
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exit_code_is_1_when_any_goal_is_missed() -> None:
    cli = load_bench("_cli")
    assert cli.verdict(True) == "meets"
    assert cli.verdict(False) == "misses"
    assert cli.exit_code([True, True]) == 0
    assert cli.exit_code([True, False]) == 1
    assert cli.exit_code([]) == 0


def test_datagen_judges_both_goals() -> None:
    datagen = load_bench("datagen")
    assert datagen.judge_1m(11.3) == ("1M messages: 11.30 s (meets the goal <= 15 s)", True)
    assert datagen.judge_1m(15.01)[1] is False
    assert "misses the goal <= 15 s" in datagen.judge_1m(15.01)[0]
    assert datagen.judge_ratio(117.4) == ("117x faster (misses the goal >= 300x)", False)
    assert datagen.judge_ratio(300.0) == ("300x faster (meets the goal >= 300x)", True)


def test_datagen_says_whether_the_story_figure_was_measured_or_extrapolated() -> None:
    datagen = load_bench("datagen")
    assert datagen.story_basis(100_000) == "measured"
    assert datagen.story_basis(2_000) == "extrapolated from 2,000"


def test_load_judges_and_takes_every_column_from_the_median() -> None:
    load = load_bench("load")
    assert load.judge(0.85) == ("(meets the goal >= 0.5)", True)
    assert load.judge(0.49) == ("(misses the goal >= 0.5)", False)
    assert load.judge(float("nan"))[1] is False
    rounds = [
        {"ops_per_s": 100.0, "latency_mean_ms": 50.0, "errors": 0.0},
        {"ops_per_s": 300.0, "latency_mean_ms": 10.0, "errors": 9.0},
        {"ops_per_s": 200.0, "latency_mean_ms": 20.0, "errors": 1.0},
    ]
    # The last round's mean ms and errors (20, 1) were printed next to the median ops/s.
    assert load.medians(rounds) == {"ops_per_s": 200.0, "latency_mean_ms": 20.0, "errors": 1.0}
    rounds[2], rounds[1] = rounds[1], rounds[2]
    assert load.medians(rounds) == {"ops_per_s": 200.0, "latency_mean_ms": 20.0, "errors": 1.0}


def _row(closer: str | None, wire: str | None, goal: str | None) -> dict[str, Any]:
    return {"closer": closer, "on_the_wire": wire, "goal": goal}


def test_shaping_judges_rows_closer_than_cdp_and_unshaped() -> None:
    shaping = load_bench("shaping")
    rows = {
        "tiny": _row("devicelab", "devicelab", "ok"),
        "down 100 KB": _row("CDP", "devicelab", None),
        "ws burst worst msg": _row("devicelab", "devicelab", "MISS (+20 ms)"),
    }
    (goal_line, goal_met), (closer_line, closer_met) = shaping.judge_rows("4g", rows)
    assert goal_met is False
    assert goal_line == "4g: goal column ok on 1 of 2 rows (misses the goal: ok on every row)"
    assert closer_met is False
    assert closer_line == (
        "4g: closer than CDP on 2 of 3 rows (misses the goal: closer than CDP on every row); "
        "on the wire on 3 of 3"
    )
    no_cdp = {"tiny": _row(None, None, "ok")}
    assert shaping.judge_rows("5g", no_cdp)[1] == (
        "5g: closer than CDP: not judged (no CDP rows)",
        None,
    )
    figures = {
        "direct p50": 0.0002, "proxy p50": 0.0062, "direct p95": 0.001, "proxy p95": 0.002,
        "direct new-conn p50": 0.001, "proxy new-conn p50": 0.003,
        "direct MB/s": 1500.0, "proxy MB/s": 350.0,
    }  # fmt: skip
    lines = shaping.judge_unshaped(figures)
    assert lines[0] == ("added latency p50: 6.00 ms (misses the goal <= 5 ms)", False)
    assert lines[1][1] is None  # p95: printed, no goal
    assert lines[-1] == (
        "throughput: proxy 350 MB/s, direct 1500 MB/s (meets the goal >= 100 MB/s)",
        True,
    )
    assert shaping.goals_json(lines) == [
        {"goal": lines[0][0], "verdict": "misses"},
        {"goal": lines[-1][0], "verdict": "meets"},
    ]


def _rt_row(size: int, p95: float, received: int = 100) -> dict[str, Any]:
    return {"subscribers": size, "p95_ms": p95, "received": received, "expected": 100}


def test_realtime_judges_the_goal_at_1000_subscribers() -> None:
    realtime = load_bench("realtime")
    line, met = realtime.judge([_rt_row(100, 20.0), _rt_row(1000, 77.4)])
    assert met is True
    assert line == "goal: p95 <= 100 ms at 1000 subscribers: p95 77.4 ms (meets the goal)"
    assert realtime.judge([_rt_row(1000, 100.1)])[1] is False
    assert realtime.judge([_rt_row(1000, 50.0, received=99)])[1] is False  # changes lost
    assert realtime.judge([_rt_row(100, 500.0)])[1] is None  # 1000 not run: not judged


@pytest.mark.parametrize(("median", "met"), [(0.117, True), (0.300, False), (0.41, False)])
def test_cli_startup_judges_the_goal(median: float, met: bool) -> None:
    cli_startup = load_bench("cli_startup")
    line, verdict = cli_startup.judge(median)
    assert verdict is met
    words = "meets" if met else "misses"
    assert line == f"goal: devicelab --help median {median:.3f} s ({words} the goal < 0.300 s)"
