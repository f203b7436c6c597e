"""The load under faults of the server: dropped connections, reset statistics, a role
with few privileges. Real short loads on a cluster of our own (its statistics may be
reset and its backends terminated without disturbing anything else).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from backend_checks.load import LoadOptions, judge_step, run_load
from backend_checks.load.verdict import load_checks
from devicelab.config import load_targets

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def dsn(load_cluster: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A scratch database with a small data set on a cluster of our own, with a role
    limited to 5 connections and one that may not read server settings."""
    import psycopg

    with load_cluster("loadfaults") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for role, limit in (("devicelab_faults_limited", 5), ("devicelab_faults_plain", -1)):
                conn.execute(
                    f"CREATE ROLE {role} LOGIN BYPASSRLS CONNECTION LIMIT {limit}"  # type: ignore[arg-type]
                )
                conn.execute(f"GRANT authenticated TO {role}")  # type: ignore[arg-type]
        yield url


def _while_the_users_run(dsn: str, users: int, act: Callable[[Any], None]) -> threading.Thread:
    """A thread that waits until ``users`` load sessions are connected, then runs ``act``
    with an autocommit connection as postgres."""

    def run() -> None:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = 'devicelab-load'"
                ).fetchone()
                if row is not None and row[0] >= users:
                    break
                time.sleep(0.05)
            act(conn)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_users_not_attempts_are_counted_connected_and_errors_have_causes(dsn: str) -> None:
    """Four slots for eight users, their backends terminated every 0.4 s: users reconnect
    in turn. "Connected" counts users (not the successful attempts), at most four at once;
    every failed request is under a cause; failures are not timed."""
    limited = dsn.replace("user=postgres", "user=devicelab_faults_limited")

    def terminate(conn: Any) -> None:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'devicelab-load'"
            )
            time.sleep(0.4)

    thread = _while_the_users_run(dsn, 4, terminate)
    try:
        run = run_load(limited, LoadOptions(users=[8], duration_s=3, per_user_rate=4, mix="read"))
    finally:
        thread.join()
    (step,) = run.steps
    assert step.connected <= 8, step.connected
    # An upper bound (a session counts until its user next finds it closed): under a
    # loaded machine the users notice late, so only its presence is asserted.
    assert step.peak_connected is not None and step.peak_connected >= 1
    connected = {c.name: c for c in judge_step(step, load_targets())}["all users connected"]
    assert f"at most {step.peak_connected} connected at once" in connected.detail
    # Failed connection attempts of the ramp are causes too: at least every failed request.
    assert sum(step.errors.values()) >= step.total.errors > 0


def test_requests_that_all_failed_are_judged_on_their_errors(dsn: str) -> None:
    read_only = f"{dsn} options='-c default_transaction_read_only=on'"
    run = run_load(
        read_only, LoadOptions(users=[3], duration_s=1.5, per_user_rate=8, allow_writes=True)
    )
    (step,) = run.steps
    sends = step.ops["send_message"]
    assert sends.count > 0 and sends.errors == sends.count
    assert sends.p95_ms == 0 and sends.max_ms == 0  # failures are counted, not timed
    criteria = {c.name: c for c in judge_step(step, load_targets())}
    send = criteria["p95 send_message"]
    assert send.ok is False and send.value is None
    assert f"all {sends.errors} requests failed" in send.detail
    checks, _ = load_checks(run, load_targets())
    reason = next(c for c in checks if c.id == "load_3").reason  # a step of its own
    assert "p95 send_message: all" in reason


def test_a_role_that_may_not_read_settings_runs_without_statement_statistics(
    dsn: str,
) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        # Not installed: the run asks the server whether it preloads the library.
        conn.execute("DROP EXTENSION pg_stat_statements")
    try:
        plain = dsn.replace("user=postgres", "user=devicelab_faults_plain")
        run = run_load(plain, LoadOptions(users=[2], duration_s=1, per_user_rate=4, mix="read"))
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
    (step,) = run.steps
    assert step.total.count > 0
    assert not step.deltas.statements_available
    assert "statement statistics are not available" in step.deltas.statements_note


def test_statistics_reset_during_a_step_is_said_not_subtracted(dsn: str) -> None:
    def reset(conn: Any) -> None:
        time.sleep(1.0)
        conn.execute("SELECT pg_stat_reset()")
        conn.execute("SELECT pg_stat_statements_reset()")

    thread = _while_the_users_run(dsn, 4, reset)
    try:
        run = run_load(
            dsn, LoadOptions(users=[4], duration_s=2.5, per_user_rate=5, allow_writes=True)
        )
    finally:
        thread.join()
    deltas = run.steps[0].deltas
    assert not deltas.tables_available and "reset during the step" in deltas.tables_note
    assert not deltas.statements_available
    assert "reset during the step" in deltas.statements_note
    assert not deltas.tables  # no negative counts, nor any at all


def test_a_server_restart_between_snapshots_leaves_no_deltas() -> None:
    from backend_checks.load import dbstats

    fields = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "n_tup_ins",
              "n_tup_upd", "n_tup_del", "n_tup_hot_upd")  # fmt: skip
    counters = dict.fromkeys(fields, 500.0)
    before = dbstats.Snapshot(
        taken_at=0,
        statements={},
        tables={"public.messages": counters},
        postmaster_start="2026-11-30 10:00:00+00",
    )
    after = dbstats.Snapshot(
        taken_at=9,
        statements={},
        tables={"public.messages": counters | {"n_tup_ins": 3.0, "idx_scan": 600.0}},
        postmaster_start="2026-11-30 10:00:05+00",
    )
    deltas = dbstats.delta(before, after)
    assert not deltas.tables_available and not deltas.statements_available
    assert "restarted during the step" in deltas.tables_note
    assert not deltas.tables
    assert dbstats.restarted(before, after)


def test_a_crashed_load_process_is_reported_by_its_cause(tmp_path: Path) -> None:
    # Locust logs on after the traceback: its last line ("Your selected spawn rate is very
    # high") was given as the reason.
    import subprocess
    import sys

    from backend_checks.load import procs
    from devicelab.errors import ProbeFailed

    log = tmp_path / "w.log"
    text = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "psycopg.OperationalError: connection is bad\n"
        "[2026-11-30 10:00:00,000] host/WARNING/locust.runners: Your selected spawn rate is"
        " very high (>100/worker)\n"
    )
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", f"import sys; sys.stderr.write({text!r})"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    with pytest.raises(ProbeFailed) as info:
        procs.event(proc, log, 10)
    proc.wait(timeout=10)
    procs.forget(proc)
    assert info.value.message.endswith(": psycopg.OperationalError: connection is bad")


def test_a_step_that_stops_early_leaves_no_cpu_sampler_running(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker killed (or Ctrl-C) during the window: the step's CPU sampler thread went
    # on sampling the server once a second for the rest of the process, one per step.
    from backend_checks.load import procs, step
    from devicelab.errors import ProbeFailed

    real = procs.event

    def dies_in_the_window(proc: Any, log: Path, timeout: float) -> Any:
        if timeout == 3 + 60:  # the window's wait (its duration + 60), after the sampler
            raise ProbeFailed("a load process died", hint="see its log")
        return real(proc, log, timeout)

    monkeypatch.setattr(step.procs, "event", dies_in_the_window)
    before = {t for t in threading.enumerate() if t.name == "devicelab-cpu"}
    with pytest.raises(ProbeFailed, match="a load process died"):
        run_load(dsn, LoadOptions(users=[3], duration_s=3, mix="read"))
    left = {t for t in threading.enumerate() if t.name == "devicelab-cpu"} - before
    assert not [t for t in left if t.is_alive()], left
