"""What "supported" means, judged on synthetic steps (no server), and the CLI parsers."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from backend_checks.load import LoadOptions, LoadRun, judge_step, load_checks
from backend_checks.load.models import CpuReport, OpStats, StatsDelta, StepResult
from devicelab.cli.load import parse_duration, parse_users
from devicelab.config import load_targets
from devicelab.errors import BadInput


def _op(p95: float, count: int = 1000, errors: int = 0) -> OpStats:
    return OpStats(
        count=count, errors=errors, throughput_per_s=(count - errors) / 60, p50_ms=p95 / 3,
        p95_ms=p95, p99_ms=p95 * 1.5, max_ms=p95 * 2, mean_ms=p95 / 2, service_p95_ms=p95,
    )  # fmt: skip


def _step(users: int, *, cpu: float | None = 40.0, p95: float = 20.0, errors: int = 0,
          exhaustion: int = 0) -> StepResult:  # fmt: skip
    ops = {name: _op(p95, errors=errors) for name in
           ("conversation_list", "fetch_messages", "search_messages")}  # fmt: skip
    return StepResult(
        users=users, processes=1, mix={n: 1 for n in ops}, mode="closed", rate_per_s=None,
        duration_s=60, started_s=0, connected=users, connect_failures=exhaustion,
        exhaustion=exhaustion, ops=ops, total=_op(p95, 3000, 3 * errors), errors={},
        cpu=CpuReport(method="psutil" if cpu is not None else "none", mean_pct=cpu),
        deltas=StatsDelta(statements_available=False), timeline_t=[], timeline_throughput=[],
        timeline_p95_ms=[],
    )  # fmt: skip


def _run(*steps: StepResult) -> LoadRun:
    now = datetime.now(UTC)
    return LoadRun(
        target="postgresql://x@127.0.0.1/db", started_at=now, finished_at=now,
        options=LoadOptions(users=[s.users for s in steps]), identities=1000, steps=list(steps),
    )  # fmt: skip


def test_both_steps_supported() -> None:
    checks, _ = load_checks(_run(_step(100), _step(1000)), load_targets())
    assert {c.id: (c.status, c.value) for c in checks} == {
        "load_100": ("pass", 100),
        "load_1000": ("pass", 1000),
    }
    criteria = checks[1].evidence["criteria"]
    assert {c["name"] for c in criteria} >= {
        "all users connected", "error rate", "no connection exhaustion", "database CPU",
        "p95 conversation_list", "p95 fetch_messages", "p95 search_messages",
    }  # fmt: skip


def test_a_second_without_completions_has_no_p95_point() -> None:
    # A 3 s table lock: nothing completed in seconds 2 and 3, then everything at once.
    step = _step(100).model_copy(
        update={
            "timeline_t": [1.0, 2.0, 3.0, 4.0],
            "timeline_throughput": [20.0, 0.0, 0.0, 60.0],
            "timeline_p95_ms": [8.9, 0.0, 0.0, 2859.0],
        }
    )
    _, series = load_checks(_run(step), load_targets())
    p95 = next(s for s in series if s.name == "load_100.p95")
    assert (p95.t, p95.v) == ([1.0, 4.0], [8.9, 2859.0])
    throughput = next(s for s in series if s.name == "load_100.throughput")
    assert throughput.v == [20.0, 0.0, 0.0, 60.0]  # no completions is a measured 0 ops/s


def test_cpu_over_80_fails_1000_but_100_still_counts() -> None:
    checks, _ = load_checks(_run(_step(100), _step(1000, cpu=91.0)), load_targets())
    by_id = {c.id: c for c in checks}
    assert by_id["load_100"].status == "pass"
    assert by_id["load_1000"].status == "fail" and by_id["load_1000"].value == 100
    assert "database CPU 91 % (needs < 80 %)" in by_id["load_1000"].reason


def test_a_failed_bigger_step_says_nothing_about_fewer_users() -> None:
    failed, _ = load_checks(_run(_step(1000, cpu=91.0)), load_targets())
    by_id = {c.id: c for c in failed}
    assert by_id["load_1000"].status == "fail"
    assert by_id["load_100"].status == "skip"
    assert "no step with 100 users ran" in by_id["load_100"].reason
    passed, _ = load_checks(_run(_step(1000)), load_targets())
    assert {c.id: c.status for c in passed} == {"load_100": "pass", "load_1000": "pass"}


@pytest.mark.parametrize(
    ("step", "failed"),
    [
        (_step(100, p95=60.0), "p95 fetch_messages"),  # message fetch < 50 ms
        (_step(100, errors=20), "error rate"),  # 2 % of requests failed
        (_step(100, exhaustion=3), "no connection exhaustion"),
    ],
)
def test_each_criterion_can_fail(step: StepResult, failed: str) -> None:
    verdicts = {c.name: c.ok for c in judge_step(step, load_targets())}
    assert verdicts[failed] is False


def test_remote_cpu_is_not_judged() -> None:
    verdicts = {c.name: c.ok for c in judge_step(_step(100, cpu=None), load_targets())}
    assert verdicts["database CPU"] is None
    checks, _ = load_checks(_run(_step(100, cpu=None)), load_targets())
    assert checks[0].status == "pass"


def test_parsers() -> None:
    assert parse_duration("60s") == 60 and parse_duration("2m") == 120
    assert parse_duration("90") == 90
    assert parse_users("100,1000") == [100, 1000]
    for bad in ("", "x", "0", "-5s"):
        with pytest.raises(BadInput):
            parse_duration(bad) if bad.endswith("s") else parse_users(bad)


def test_importing_the_package_does_not_import_locust() -> None:
    code = (
        "import sys, backend_checks.load, devicelab.cli.load; "
        "print('gevent' in sys.modules, 'locust' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_load_command_registers_on_the_backend_group() -> None:
    import typer
    from typer.testing import CliRunner

    from devicelab.cli.load import register_load

    app, backend = typer.Typer(), typer.Typer()
    app.add_typer(backend, name="backend")
    register_load(backend)
    runner = CliRunner()
    shown = runner.invoke(app, ["backend", "load", "--help"])
    assert shown.exit_code == 0 and "--users" in shown.output and "--closed" in shown.output
    bad = runner.invoke(app, ["backend", "load", "--dsn", "x", "--duration", "soon"])
    assert isinstance(bad.exception, BadInput)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--users", "100,100"], "a step given twice"),
        (["--duration", ""], "bad duration ''"),  # it ran the default 60 s
        (["--duration", "1ms"], "1 s at least"),  # judged 0 requests
        (["--closed", "--rate", "50"], "--rate does not apply"),  # the rate was ignored
        (["--rate", "inf"], "bad --rate"),  # nan was refused, inf ran with no schedule
        (["--per-user-rate", "inf"], "bad --per-user-rate"),
        (["--import", "merged.json", "--users", "5"], "the files say how many users ran"),
    ],
)
def test_contradictory_or_degenerate_load_options_are_refused(args: list[str], says: str) -> None:
    import typer
    from typer.testing import CliRunner

    from devicelab.cli.load import register_load

    app, backend = typer.Typer(), typer.Typer()
    app.add_typer(backend, name="backend")
    register_load(backend)
    done = CliRunner().invoke(app, ["backend", "load", "--dsn", "host=127.0.0.1 port=1", *args])
    assert isinstance(done.exception, BadInput), done.output
    assert says in done.exception.message


def test_a_step_the_story_does_not_name_is_judged_as_its_own_check() -> None:
    # --users 30,60 wrote no verdict at all, and a 30-user step with exhaustion exited 0.
    checks, _ = load_checks(_run(_step(30, exhaustion=38), _step(60)), load_targets())
    by_id = {c.id: c for c in checks}
    assert by_id["load_100"].status == by_id["load_1000"].status == "skip"
    assert (
        by_id["load_30"].status == "fail" and "no connection exhaustion" in by_id["load_30"].reason
    )
    assert by_id["load_60"].status == "pass" and by_id["load_60"].value == 60
    assert by_id["load_60"].evidence["criteria"]


def test_an_operation_that_did_not_run_in_the_window_is_not_judged() -> None:
    # 5 users for 2 s sent no search: its p95 "0.0" failed the step.
    step = _step(5)
    step.ops["search_messages"] = _op(0.0, count=0)
    criteria = {c.name: c for c in judge_step(step, load_targets())}
    assert criteria["p95 search_messages"].ok is None
    assert "none ran" in criteria["p95 search_messages"].detail
    assert criteria["p95 fetch_messages"].ok is True


def test_a_window_without_any_request_says_so() -> None:
    # --per-user-rate 1e-9: "error rate 100.0 (needs < 1 %)" for 0 of 0 requests.
    step = _step(5)
    step.total = _op(0.0, count=0)
    for name in step.ops:
        step.ops[name] = _op(0.0, count=0)
    rate = {c.name: c for c in judge_step(step, load_targets())}["error rate"]
    assert rate.ok is False and rate.value is None
    assert rate.detail == "no request was made in the window"
    (check,) = [c for c in load_checks(_run(step), load_targets())[0] if c.id == "load_5"]
    assert "error rate: no request was made in the window" in check.reason


def test_a_lost_load_process_fails_the_step() -> None:
    step = _step(100)
    step.lost_workers = ["worker-2"]
    criteria = {c.name: c for c in judge_step(step, load_targets())}
    assert criteria["no load process lost"].ok is False
    assert "worker-2" in criteria["no load process lost"].detail


def test_a_story_check_without_its_row_is_still_one_check() -> None:
    # A user's targets.yaml without load_1000: its 1000-user step came back as a second
    # load_1000 (source --users) beside the skipped one.
    from devicelab.models import TargetBook

    shipped = load_targets()
    book = TargetBook(targets=[t for t in shipped.targets if t.check != "load_1000"])
    checks, _ = load_checks(_run(_step(100), _step(1000)), book)
    assert sorted(c.id for c in checks) == ["load_100", "load_1000"]


def test_the_rate_share_of_a_window_scheduling_a_handful_is_not_judged() -> None:
    # 10 users at 0.2 ops/s for 1 s: 2 requests scheduled, 1 sent ("50 %") says nothing.
    short = _step(10).model_copy(update={"mode": "fixed-rate", "rate_per_s": 2.0,
                                         "duration_s": 1.0})  # fmt: skip
    short.total.throughput_per_s = 1.0
    criteria = {c.name: c for c in judge_step(short, load_targets())}
    rate = criteria["throughput kept the intended rate"]
    assert rate.ok is None
    assert "too few to judge" in rate.detail
    # The same share over 60 s (120 scheduled) is judged, and fails.
    long = short.model_copy(update={"duration_s": 60.0})
    criteria = {c.name: c for c in judge_step(long, load_targets())}
    assert criteria["throughput kept the intended rate"].ok is False
