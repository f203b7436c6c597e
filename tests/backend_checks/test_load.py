"""Load (item 7): a short real load through Locust against a real PostgreSQL.

The cluster is a managed one of our own in a temporary state directory (pg_stat_statements
preloaded, max_connections 1100), holding a small generated data set. Every run here is
short (a few users for a few seconds); the 1000-user step lives in bench/load.py.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from backend_checks.datagen import DatagenParams
from backend_checks.load import LoadOptions, judge_step, load_checks, run_load
from devicelab.config import load_targets
from devicelab.errors import BackendUnavailable, BadInput, UnsafeActionRefused
from devicelab.models import Target, TargetBook

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def dsn(load_cluster: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A scratch database with the schema and a small data set, on a cluster of our own,
    with a role limited to 5 connections (the exhaustion test)."""
    import psycopg

    with load_cluster("loadtest") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE ROLE devicelab_load_limited LOGIN BYPASSRLS CONNECTION LIMIT 5")
            conn.execute("GRANT authenticated TO devicelab_load_limited")
        yield url


def test_short_load_measures_real_histograms_and_deltas(dsn: str) -> None:
    run = run_load(dsn, LoadOptions(users=[20], duration_s=3, per_user_rate=5, allow_writes=True))
    (step,) = run.steps
    assert step.connected == 20 and step.exhaustion == 0 and step.total.errors == 0
    # ~20 users x 5 ops/s x 3 s: every operation of the mix ran.
    assert 200 <= step.total.count <= 330
    for name, op in step.ops.items():
        assert op.count > 0, name
        assert 0 < op.p50_ms <= op.p95_ms <= op.p99_ms <= op.max_ms, name
        # Latency counts from the intended start, so it is never below the service time.
        assert op.p95_ms >= op.service_p95_ms, name
    assert sum(step.timeline_throughput) == round(step.total.throughput_per_s * 3)
    assert len(step.timeline_p95_ms) == 3 and max(step.timeline_p95_ms) > 0

    # The deltas are of this step only: exactly the calls the users made.
    deltas = step.deltas
    assert deltas.statements_available, deltas.statements_note
    listed = [s for s in deltas.statements if "conversation_list" in s["query"] and s["toplevel"]]
    assert sum(s["calls"] for s in listed) == step.ops["conversation_list"].count
    tables = {t["table"]: t for t in deltas.tables}
    assert tables["public.messages"]["n_tup_ins"] == step.ops["send_message"].count
    assert tables["public.messages"]["idx_scan"] > 0
    assert step.cpu.method == "psutil" and step.cpu.mean_pct is not None

    # Locust's gevent patching stayed in the load process.
    assert "gevent" not in sys.modules
    assert "locust" not in sys.modules

    criteria = {c.name: c for c in judge_step(step, load_targets())}
    assert criteria["no connection exhaustion"].ok is True
    assert criteria["all users connected"].ok is True
    checks, series = load_checks(run, load_targets())
    # The story's two checks skip (no such step); the 20-user step is judged as its own.
    assert {c.id: c.status for c in checks} == {
        "load_100": "skip",
        "load_1000": "skip",
        "load_20": "pass",
    }
    assert {s.name for s in series} >= {"load_20.throughput", "load_20.p95", "load_20.db_cpu"}


def test_connection_exhaustion_is_a_failing_verdict(dsn: str) -> None:
    limited = dsn.replace("user=postgres", "user=devicelab_load_limited")
    run = run_load(limited, LoadOptions(users=[12], duration_s=2, per_user_rate=2, mix="read"))
    (step,) = run.steps
    # Five slots for the role: one is the runner's own connection, the rest are users'.
    assert step.connected <= 5
    assert step.exhaustion >= 12 - step.connected
    assert any("too many connections" in key for key in step.errors)
    book = TargetBook(
        targets=[
            Target(check="load_100", platform="backend", op=">=", value=12, unit="users",
                   stat="value", source="test: 12 users")
        ]
    )  # fmt: skip
    checks, _ = load_checks(run, book)
    check = next(c for c in checks if c.id == "load_100")
    assert check.status == "fail" and check.value == 0
    assert "no connection exhaustion" in check.reason
    failed = {c["name"] for c in check.evidence["criteria"] if c["ok"] is False}
    assert {"no connection exhaustion", "all users connected", "error rate"} <= failed


def test_our_statistics_connection_closed_by_the_server_is_opened_again(dsn: str) -> None:
    """The runner's own connection idles through the window: a server that closes it
    (idle_session_timeout, pg_terminate_backend) cost the whole run a traceback."""
    import threading

    import psycopg

    done = threading.Event()
    killed: list[int] = []

    def kill_ours_once_the_users_are_in() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not done.is_set() and not killed:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'devicelab'"
                    " AND EXISTS (SELECT 1 FROM pg_stat_activity"
                    "             WHERE application_name = 'devicelab-load')"
                ).fetchall()
                killed.extend(1 for (ok,) in rows if ok)
                time.sleep(0.05)

    thread = threading.Thread(target=kill_ours_once_the_users_are_in)
    thread.start()
    try:
        run = run_load(dsn, LoadOptions(users=[5], duration_s=2, per_user_rate=5, mix="read"))
    finally:
        done.set()
        thread.join()
    assert killed
    (step,) = run.steps
    assert step.deltas.statements_available, step.deltas.statements_note
    listed = [s for s in step.deltas.statements if "conversation_list" in s["query"]]
    assert sum(s["calls"] for s in listed if s["toplevel"]) == step.ops["conversation_list"].count


def test_a_server_gone_during_the_load_is_one_line_not_a_traceback(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from backend_checks.load import dbstats, runner, step

    real = dbstats.snapshot
    calls: list[int] = []

    def snapshot_then_the_server_stops(conn: psycopg.Connection[Any], schema: str) -> Any:
        calls.append(1)
        if len(calls) == 1:
            return real(conn, schema)
        conn.close()  # as after a shutdown: ours is gone, and no new one is accepted
        raise psycopg.errors.AdminShutdown("terminating connection due to administrator command")

    real_connect = step.connect  # the step's own reconnection for its last snapshot

    def connect_until_it_stops(*args: Any, **kwargs: Any) -> Any:
        if calls:
            raise BackendUnavailable("cannot connect to the server: connection refused")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(dbstats, "snapshot", snapshot_then_the_server_stops)
    monkeypatch.setattr(step, "connect", connect_until_it_stops)
    with pytest.raises(BackendUnavailable, match="connection refused"):
        runner.run_target(
            runner.LoadTarget(label="x", dsn=dsn),
            LoadOptions(users=[3], duration_s=1, per_user_rate=2, mix="read"),
        )


def test_the_users_connect_with_the_dsns_own_options(dsn: str) -> None:
    """The users' connections add their statement_timeout to the DSN's options instead of
    replacing them: a read-only session setting reached only our own connection."""
    read_only = f"{dsn} options='-c default_transaction_read_only=on'"
    run = run_load(
        read_only, LoadOptions(users=[3], duration_s=1.5, per_user_rate=8, allow_writes=True)
    )
    (step,) = run.steps
    assert step.ops["send_message"].count > 0
    assert step.ops["send_message"].errors == step.ops["send_message"].count
    assert any("25006" in kind for kind in step.errors), step.errors  # read_only_sql_transaction


def test_a_load_process_that_dies_leaves_its_log_where_the_hint_says(dsn: str) -> None:
    # The hint named a log in a folder already removed.
    import threading

    import psutil

    from devicelab.errors import ProbeFailed

    done = threading.Event()

    def kill_a_worker() -> None:
        while not done.is_set():
            for child in psutil.Process().children(recursive=True):
                try:
                    if "backend_checks.load.worker" in " ".join(child.cmdline()):
                        time.sleep(0.5)
                        child.kill()
                        return
                except psutil.Error:
                    pass
            time.sleep(0.05)

    thread = threading.Thread(target=kill_a_worker)
    thread.start()
    try:
        with pytest.raises(ProbeFailed, match="a load process stopped") as info:
            run_load(dsn, LoadOptions(users=[3], duration_s=3, per_user_rate=2, mix="read"))
    finally:
        done.set()
        thread.join()
    log = Path(info.value.hint.removeprefix("its log is kept: "))
    assert log.is_file()
    assert not list(log.parent.glob("*.spec.json"))  # the DSN does not stay behind
    for path in log.parent.iterdir():
        path.unlink()
    log.parent.rmdir()


def test_a_user_row_level_security_hides_the_data_from_is_told_so(dsn: str) -> None:
    # It was sent to generate data into a database of 10,000 conversations.
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE devicelab_load_reader LOGIN IN ROLE pg_read_all_data")
    try:
        reader = dsn.replace("user=postgres", "user=devicelab_load_reader")
        with pytest.raises(BadInput, match="row-level security") as info:
            run_load(reader, LoadOptions(users=[2], duration_s=1, mix="read"))
        assert "BYPASSRLS" in info.value.hint
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP ROLE devicelab_load_reader")


def test_full_mix_refuses_to_write_without_the_flag(dsn: str) -> None:
    with pytest.raises(UnsafeActionRefused):
        run_load(dsn, LoadOptions(users=[5], duration_s=1))


def test_a_database_without_the_schema_says_so_before_asking_for_writes(empty_db: str) -> None:
    # --allow-writes would not help there: the user must be sent to datagen at once.
    with pytest.raises(BadInput, match="messaging schema") as info:
        run_load(empty_db, LoadOptions(users=[5], duration_s=1))
    assert "datagen" in info.value.hint


def test_cli_full_mix_writes_only_to_a_database_of_datagen_without_the_flag(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # DESIGN's `backend load --dsn DSN --users N` has no --allow-writes: a database
    # `backend datagen` built is a scratch one, and the full mix may write there.
    import psycopg

    dsn = generate_db(DatagenParams(messages=2_000, users=20, conversations=50))

    def load() -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "devicelab", "backend", "load", "--dsn", dsn]
        argv += ["--users", "5", "--duration", "2s", "--rate", "40"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)

    def messages() -> int:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM messages").fetchone()
        return int(row[0]) if row else 0

    ran = load()
    assert ran.returncode == 0, ran.stderr
    assert messages() > 2_000, "the full mix sent messages"
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE public.their_notes (note text)")
        conn.execute("INSERT INTO public.their_notes VALUES ('theirs')")
    before = messages()
    refused = load()
    assert refused.returncode == 2 and "--allow-writes" in refused.stderr
    assert messages() == before


def test_the_load_seeds_a_fresh_managed_cluster_as_check_does() -> None:
    # `backend load` with no --dsn first on a new machine said "relation
    # public.conversations does not exist" and sent the user to datagen --dsn DSN.
    import os
    import shutil
    import tempfile

    state = Path(tempfile.mkdtemp(prefix="devicelab-loadseed-", dir="/tmp"))
    state.chmod(0o755)  # the postgres user must traverse it when we are root
    env = {**os.environ, "DEVICELAB_STATE": str(state)}
    cli = [sys.executable, "-m", "devicelab", "backend"]
    try:
        argv = [*cli, "load", "--users", "3", "--duration", "1s", "--rate", "10"]
        ran = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=300, check=False
        )
        assert ran.returncode == 0, ran.stderr
        assert "seeding the empty database (100,000 generated messages)" in ran.stderr
        assert "3 users (SQL" in ran.stdout
        # Each step says when it ends, as it ends (a Ctrl-C later keeps it on the screen).
        assert "load: 3 users done: " in ran.stderr
    finally:
        subprocess.run([*cli, "stop"], capture_output=True, env=env, timeout=120, check=False)
        shutil.rmtree(state, ignore_errors=True)


def test_more_users_than_the_database_has_is_said(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # 100 simulated users on 19 identities ran without a word; the docs promise one real
    # app user per simulated one.
    dsn = generate_db(DatagenParams(messages=300, users=4, conversations=6))
    run = run_load(dsn, LoadOptions(users=[6], duration_s=1, per_user_rate=2, mix="read"))
    assert run.identities <= 4
    assert any("the 6 simulated users share them" in note for note in run.notes), run.notes


def test_results_are_written_even_when_stdout_is_gone(
    generate_db: Callable[[DatagenParams], str], tmp_path: Path
) -> None:
    # `backend load --out DIR | head -1`: the table's print failed first, and the results
    # of the whole load were never written.
    import os

    dsn = generate_db(DatagenParams(messages=300, users=4, conversations=6))
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first print fails
    try:
        argv = [sys.executable, "-m", "devicelab", "backend", "load", "--dsn", dsn]
        argv += ["--users", "2", "--duration", "1s", "--mix", "read"]
        argv += ["--out", str(tmp_path / "out")]
        subprocess.run(argv, stdout=write_end, stderr=subprocess.DEVNULL, timeout=120, check=False)
    finally:
        os.close(write_end)
    assert (tmp_path / "out" / "results.json").is_file()


def test_bad_dsn_is_one_line_without_the_password() -> None:
    with pytest.raises(BackendUnavailable) as info:
        run_load(
            "postgresql://app:hunter2secret@127.0.0.1:1/none",
            LoadOptions(users=[1], duration_s=1, mix="read"),
        )
    assert info.value.exit_code == 3
    assert "hunter2secret" not in info.value.one_line()


def test_locust_master_and_worker_merge_histograms(dsn: str, tmp_path: Path) -> None:
    """Locust's own master/worker mode (several machines): histograms reach the master."""
    import os
    import socket
    import subprocess

    from backend_checks.load.models import WorkerResult
    from backend_checks.load.runner import write_spec

    spec = write_spec(dsn, LoadOptions(mix="read", per_user_rate=4, duration_s=3), 8,
                      tmp_path / "spec.json")  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "DEVICELAB_LOAD_SPEC": str(spec),
           "DEVICELAB_LOAD_OUT": str(tmp_path / "merged.json")}  # fmt: skip
    locust = [sys.executable, "-m", "locust", "-f", "backend_checks/load/locustfile.py"]
    root = Path(__file__).resolve().parents[2]
    master = subprocess.Popen(
        [*locust, "--master", "--headless", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", port, "--expect-workers", "1", "-u", "8", "-r", "50",
         "-t", "4s", "--only-summary"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = subprocess.Popen(
        [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", port],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        master.wait(timeout=60)
        worker.wait(timeout=30)
    finally:
        for proc in (master, worker):
            if proc.poll() is None:
                proc.kill()
    merged = WorkerResult.model_validate_json((tmp_path / "merged.json").read_text())
    assert merged.connected == 8
    assert sum(op.ok for op in merged.ops.values()) > 20
    assert all(op.latency_hdr for op in merged.ops.values())
    assert merged.shape is not None and merged.shape.workers == 1
    assert merged.shape.spec_duration_s == 3 and "password" not in merged.shape.target
    assert 2 <= merged.shape.duration_s <= 3  # the users' own windows, after the ramp

    # And back into devicelab: judged as a local step, CPU and deltas said missing.
    from backend_checks.load.imported import import_results

    run = import_results([tmp_path / "merged.json"])
    (step,) = run.steps
    assert step.users == 8 and step.connected == 8 and step.mode == "fixed-rate"
    assert step.total.count == sum(op.ok + op.errors for op in merged.ops.values())
    assert step.cpu.method == "none" and not step.deltas.statements_available


def test_fixed_rate_latency_counts_from_the_intended_start(dsn: str) -> None:
    """Users asked for more than the server gives fall behind their schedule: latency
    from the intended start grows (coordinated omission corrected), service time does not."""
    run = run_load(dsn, LoadOptions(users=[2], duration_s=2, per_user_rate=20_000, mix="read"))
    (step,) = run.steps
    assert step.total.count > 20
    assert step.total.p95_ms > 3 * step.total.service_p95_ms
    assert step.missed > 1000  # the schedule outran the server; the window still closed
    criteria = {c.name: c for c in judge_step(step, load_targets())}
    assert criteria["throughput kept the intended rate"].ok is False


def test_the_start_signal_to_a_load_process_that_died_after_ready_is_no_traceback() -> None:
    # A worker killed between "ready" and "go" ended the step with a BrokenPipeError (the
    # CI saw it in the test above); the wait that follows names the process and its log.
    from backend_checks.load.step import _start_at

    gone = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE, bufsize=0)
    gone.wait(timeout=30)
    try:
        _start_at(time.time(), [gone])
    finally:
        assert gone.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            gone.stdin.close()


def test_a_session_is_warmed_before_the_window_and_leaves_nothing_behind(dsn: str) -> None:
    import json

    import psycopg

    from backend_checks.load.mix import OPERATIONS
    from backend_checks.load.models import Identity, WorkerSpec
    from backend_checks.load.sql_session import SqlSession

    with psycopg.connect(dsn, autocommit=True) as db:
        row = db.execute(
            "SELECT p::text, c.id::text FROM conversations c, unnest(c.participants) p LIMIT 1"
        ).fetchone()
        assert row is not None
        user, conversation = row

        def counts() -> tuple[int, int, int]:
            got = db.execute(
                "SELECT (SELECT count(*) FROM messages), n_tup_ins, idx_scan"
                " FROM pg_stat_user_tables WHERE relid = 'public.messages'::regclass"
            ).fetchone()
            assert got is not None
            return int(got[0]), int(got[1]), int(got[2])

        before = counts()
        identity = Identity(user_id=user, claims=json.dumps({"sub": user, "role": "authenticated"}),
                            conversations=[conversation])  # fmt: skip
        spec = WorkerSpec(dsn=dsn, identities=[identity], users=1, mix={"send_message": 1},
                          duration_s=1, spawn_rate=1, out="/dev/null")  # fmt: skip
        session = SqlSession(spec, identity)
        session.connect()
        values = {"conversation": conversation, "term": "meeting", "content": "warm-up"}
        session.warm([(op, {k: values[k] for k in op.params}) for op in OPERATIONS])
        try:
            messages, inserted, scanned = counts()
            # Nothing written; the rolled-back send and the reads' index scans are in the
            # statistics already (flushed before warm() returned, not up to 10 s later).
            assert messages == before[0]
            assert inserted == before[1] + 1
            assert scanned > before[2]
            # The reads (and the identity statement) stay prepared for the window.
            assert session.conn is not None
            prepared = session.conn.execute("SELECT count(*) FROM pg_prepared_statements")
            assert (prepared.fetchone() or [0])[0] >= 4
        finally:
            session.close()
