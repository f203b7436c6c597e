"""HTTP load: the story's users sent to a Supabase API as supabase-js sends them.

The API is our reference server on loopback over a managed cluster of our own in a
temporary state directory (pg_stat_statements preloaded), holding a small generated data
set; a small stand-in API answers with the errors a saturated Supabase gives (PostgREST's
pool timeout, Auth's rate limit), which the reference server cannot be made to give in a
few seconds. Every run is a few users for a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from backend_checks.load import LoadOptions, judge_step, load_checks
from backend_checks.load.api import RestApi, run_reference_load, run_rest_load
from backend_checks.load.models import ANON_KEY_ENV
from backend_checks.load.runner import LoadTarget, run_target
from devicelab.config import load_targets

pytestmark = pytest.mark.timeout(120)

_KEY = "test-anon-key-9f3b27c1d8e4"  # the stand-in's key: must never be printed
_CLI = [sys.executable, "-m", "devicelab", "backend", "load"]


@pytest.fixture(scope="module")
def dsn(load_cluster: Callable[[str], AbstractContextManager[str]]) -> Iterator[str]:
    """A scratch database with the schema and a small data set, on a cluster of our own."""
    with load_cluster("loadhttp") as url:
        yield url


@pytest.fixture(scope="module")
def reference(dsn: str) -> Iterator[Any]:
    """Our reference server over the scratch database, on loopback."""
    from backend_checks.reference.server import ReferenceServer

    with ReferenceServer(dsn) as server:
        yield server


def test_http_load_on_the_reference_server_measures_as_the_sql_users(dsn: str) -> None:
    run = run_reference_load(
        LoadOptions(users=[20], duration_s=3, per_user_rate=5, allow_writes=True), dsn=dsn
    )
    (step,) = run.steps
    assert step.transport == "rest" and "reference server" in run.target
    assert step.connected == 20 and step.exhaustion == 0 and step.total.errors == 0, step.errors
    assert 200 <= step.total.count <= 330
    for name, op in step.ops.items():
        assert op.count > 0, name
        assert 0 < op.p50_ms <= op.p95_ms <= op.p99_ms <= op.max_ms, name
        assert op.p95_ms >= op.service_p95_ms, name

    # PostgREST-style requests reached the database as the signed-in users.
    tables = {t["table"]: t for t in step.deltas.tables}
    assert tables["public.messages"]["n_tup_ins"] == step.ops["send_message"].count
    assert step.deltas.statements_available, step.deltas.statements_note
    roles = {s["role"] for s in step.deltas.statements}
    assert "authenticated" in roles or "postgres" in roles
    # The database's CPU (postmaster) and the API server's (this process) apart.
    assert step.cpu.method == "psutil" and step.cpu.mean_pct is not None
    assert step.cpu.api_mean_pct is not None and step.cpu.api_mean_pct > 0

    assert "gevent" not in sys.modules and "locust" not in sys.modules
    criteria = {c.name: c for c in judge_step(step, load_targets())}
    # Everything but the timings holds whatever the machine's load: the p95s, the CPU
    # and the kept rate are the story's latency targets, which a busy 2-core machine
    # (other jobs beside this test) can miss.
    timing = ("p95 ", "database CPU", "throughput kept")
    held = {name: c.ok for name, c in criteria.items() if not name.startswith(timing)}
    assert held and all(ok is not False for ok in held.values()), held
    checks, series = load_checks(run, load_targets())
    # The story's two checks skip (no such step); the 20-user step is judged as its own.
    statuses = {c.id: c.status for c in checks}
    assert statuses["load_100"] == statuses["load_1000"] == "skip"
    missed = any(c.ok is False for c in criteria.values())
    assert statuses["load_20"] == ("fail" if missed else "pass")
    assert {s.name for s in series} >= {"load_20.throughput", "load_20.p95", "load_20.db_cpu"}


def test_http_load_over_a_database_of_datagen_writes_without_the_flag(dsn: str) -> None:
    # As over SQL (and as the refusal's own hint says): a database holding only a
    # `backend datagen` data set is a scratch one; the reference path refused it.
    run = run_reference_load(LoadOptions(users=[3], duration_s=1.5, per_user_rate=6), dsn=dsn)
    (step,) = run.steps
    assert step.ops["send_message"].count > 0 and step.total.errors == 0, step.errors


def test_http_load_without_a_dsn_signs_in_generated_users(reference: Any) -> None:
    """A remote API: users testuser1..N sign in and find their own conversations."""
    api = RestApi(url=reference.url, anon_key=reference.anon_key, accounts=6)
    run = run_rest_load(api, LoadOptions(users=[12], duration_s=2, per_user_rate=4, mix="read"))
    (step,) = run.steps
    assert step.connected == 12 and step.total.errors == 0, step.errors
    assert step.ops["fetch_messages"].count > 0  # conversations found after signing in
    assert run.identities == 6
    assert step.cpu.method == "none" and "without --dsn" in step.cpu.note
    assert not step.deltas.statements_available
    verdicts = {c.name: c.ok for c in judge_step(step, load_targets())}
    assert verdicts["database CPU"] is None  # not judged, said why
    assert reference.anon_key not in run.model_dump_json()


class _SaturatedApi:
    """A stand-in Supabase API under too much load: sign-in works (but for testuser2,
    whose password is wrong); the REST answers are PostgREST's pool timeout (504
    PGRST003), Auth/Kong's rate limit (429) and our reference server's pool timeout (503)."""

    def __init__(self) -> None:
        self.url = ""
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _token(self, request: web.Request) -> web.Response:
        assert request.headers["apikey"] == _KEY
        if (await request.json())["email"] == "testuser2@example.com":
            self.refused += 1
            body = {"code": 400, "error_code": "invalid_credentials",
                    "msg": "Invalid login credentials"}  # fmt: skip
            return web.json_response(body, status=400)
        return web.json_response({"access_token": "jwt", "user": {"id": "u1"}})

    async def _rest(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "conversations":
            return web.json_response([{"id": "11111111-1111-1111-1111-111111111111"}])
        if name == "conversation_list":
            body = {"code": "PGRST003", "message": "Timed out acquiring connection from "
                    "connection pool.", "details": None, "hint": None}  # fmt: skip
            return web.json_response(body, status=504)
        if name == "messages":
            return web.json_response({"message": "API rate limit exceeded"}, status=429)
        body = {"code": "PGRST000", "message": "no database connection available"}
        return web.json_response(body, status=503)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/auth/v1/token", self._token)
        app.router.add_route("*", "/rest/v1/{name:.*}", self._rest)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> _SaturatedApi:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_pool_timeouts_and_rate_limits_are_classified() -> None:
    with _SaturatedApi() as api:
        target = LoadTarget(label=api.url, api_url=api.url, accounts=2, env={ANON_KEY_ENV: _KEY})
        run = run_target(target, LoadOptions(users=[4], duration_s=2, per_user_rate=10,
                                             mix="read"))  # fmt: skip
    (step,) = run.steps
    # Users 2 and 4 are testuser2: refused once each, never retried in the window.
    assert step.connected == 2 and api.refused == 2
    assert step.total.count > 20
    assert step.total.errors == step.total.count  # every answer was an error
    kinds = {key.split(":")[0] for key in step.errors}
    assert kinds == {"exhaustion", "rate_limited", "auth"}, step.errors
    # 504 PGRST003 (conversation_list) and 503 pool timeout (search) are exhaustion.
    exhausted = {key: n for key, n in step.errors.items() if key.startswith("exhaustion")}
    assert any("PGRST003" in key for key in exhausted), exhausted
    assert any("no database connection available" in key for key in exhausted), exhausted
    assert step.exhaustion == sum(exhausted.values()) > 0
    failed = {c.name for c in judge_step(step, load_targets()) if c.ok is False}
    assert {"no connection exhaustion", "error rate"} <= failed
    assert _KEY not in json.dumps(step.errors)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_CLI, *args], capture_output=True, text=True, timeout=90, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_cli_http_load_from_the_environment_writes_reports(reference: Any, tmp_path: Path) -> None:
    env = {"SUPABASE_URL": reference.url, "SUPABASE_ANON_KEY": reference.anon_key}
    done = _cli("--users", "5", "--duration", "2s", "--mix", "read", "--accounts", "5",
                "--out", str(tmp_path), env=env)  # fmt: skip
    # 0 or 1: what is under test is the environment's target and the reports, not the
    # verdict of two requests (a busy CI machine once took one past the latency target).
    assert done.returncode in (0, 1), done.stderr
    assert "5 users (HTTP, fixed-rate" in done.stdout
    assert ", 0 errors," in done.stdout  # every request answered: any fail is latency
    written = (tmp_path / "results.json").read_text()
    assert json.loads(written)["run"]["backend"]["kind"] == "supabase"
    for text in (done.stdout, done.stderr, written, (tmp_path / "report.md").read_text()):
        assert reference.anon_key not in text


def test_cli_unreachable_api_is_exit_3_and_bad_input_exit_2() -> None:
    down = _cli("--url", "http://127.0.0.1:9", "--anon-key", _KEY, "--users", "1",
                "--duration", "1s", "--mix", "read")  # fmt: skip
    assert down.returncode == 3, down.stderr
    assert down.stderr.count("\n") == 1 and "cannot reach the API" in down.stderr
    assert _KEY not in down.stderr + down.stdout
    no_key = _cli("--url", "http://127.0.0.1:9", "--users", "1", env={"SUPABASE_ANON_KEY": ""})
    assert no_key.returncode == 2 and "anon key" in no_key.stderr
    both = _cli("--import", "x.json", "--dsn", "host=127.0.0.1")
    assert both.returncode == 2 and "--import" in both.stderr
    writes = _cli("--url", "http://127.0.0.1:9", "--anon-key", _KEY, "--users", "1")
    assert writes.returncode == 2 and "--allow-writes" in writes.stderr


def test_locust_master_and_worker_over_http_then_import(reference: Any, tmp_path: Path) -> None:
    """Several machines over HTTP: the spec holds no key; the master's result imports."""
    import socket

    from backend_checks.load.api import write_rest_spec
    from backend_checks.load.imported import import_results

    api = RestApi(url=reference.url, anon_key=reference.anon_key, accounts=4)
    spec = write_rest_spec(api, LoadOptions(mix="read", per_user_rate=4, duration_s=3), 6,
                           tmp_path / "spec.json")  # fmt: skip
    assert reference.anon_key not in spec.read_text()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "DEVICELAB_LOAD_SPEC": str(spec), ANON_KEY_ENV: reference.anon_key,
           "DEVICELAB_LOAD_OUT": str(tmp_path / "merged.json")}  # fmt: skip
    locust = [sys.executable, "-m", "locust", "-f", "backend_checks/load/locustfile.py"]
    root = Path(__file__).resolve().parents[2]
    master = subprocess.Popen(
        [*locust, "--master", "--headless", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", port, "--expect-workers", "1", "-u", "6", "-r", "50",
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
    merged = (tmp_path / "merged.json").read_text()
    assert reference.anon_key not in merged
    run = import_results([tmp_path / "merged.json"])
    (step,) = run.steps
    assert step.transport == "rest" and step.users == 6 and step.connected == 6
    assert step.total.count > 20 and step.total.errors == 0, step.errors
    assert run.target == reference.url
