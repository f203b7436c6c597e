"""backend check's API side: options, the preflight before any connection, the skip path."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest
from aiohttp import web

from backend_checks.api_checks import (
    API_CHECKS,
    ApiOptions,
    RealtimeLoad,
    SupabaseProject,
    api_options,
    run_api_checks,
    sign_in,
)
from backend_checks.check import CheckOptions, run_check
from devicelab.errors import BackendUnavailable, BadInput, UnsafeActionRefused
from devicelab.models import Check


def test_a_project_needs_all_four_settings() -> None:
    assert api_options(None, None, None, None, None, 100).project is None
    with pytest.raises(BadInput, match="needs --anon-key, --test-password too"):
        api_options("http://127.0.0.1:9", None, "a@b.c", None, None, 100)
    with pytest.raises(BadInput, match="unknown plan 'gold'"):
        api_options(None, None, None, None, "gold", 100)
    full = api_options("http://127.0.0.1:9", "k", "a@b.c", "pw", "free", 150)
    assert full.project is not None and full.plan_limits() is not None
    assert full.realtime.subscribers == 150
    assert "pw" not in repr(full) and "'k'" not in repr(full)


def test_bare_postgres_skips_the_api_checks_with_a_reason() -> None:
    checks = run_api_checks(None, ApiOptions())
    assert [c.id for c in checks] == [cid for cid, _, _ in API_CHECKS]
    assert all(c.status == "skip" and "--supabase-url" in c.reason for c in checks)


def test_a_plan_that_forbids_the_load_is_refused_before_connecting() -> None:
    # Port 9 (discard) has no server: reaching it would raise BackendUnavailable instead.
    project = SupabaseProject(url="http://127.0.0.1:9", anon_key="k", email="a@b.c", password="p")
    options = ApiOptions(project=project, plan="free", realtime=RealtimeLoad(subscribers=500))
    with pytest.raises(UnsafeActionRefused, match="exceed the free plan's 200"):
        run_api_checks(None, options)
    busy = ApiOptions(project=project, plan="free", realtime=RealtimeLoad(subscribers=50))
    with pytest.raises(UnsafeActionRefused, match="messages/s exceed"):
        run_api_checks(None, busy)


def test_cli_refuses_half_a_project_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devicelab", "backend", "check", "--dsn", "host=127.0.0.1",
         "--supabase-url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "needs --anon-key" in done.stderr


def test_subscribers_out_of_range_are_bad_input_with_the_limit() -> None:
    with pytest.raises(BadInput, match="--subscribers 10001 is out of range") as refused:
        api_options(None, None, None, None, None, 10_001)
    assert "10,000" in refused.value.hint
    done = subprocess.run(
        [sys.executable, "-m", "devicelab", "backend", "check", "--subscribers", "10001"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "10000" in done.stderr and "Traceback" not in done.stderr


def test_a_url_with_a_password_or_no_scheme_is_bad_input_that_hides_the_password() -> None:
    with pytest.raises(BadInput, match="holds a user or password") as userinfo:
        api_options("http://admin:S3cret@127.0.0.1:9", "k", "a@b.c", "pw", None, 100)
    assert "S3cret" not in userinfo.value.one_line()
    with pytest.raises(BadInput, match="not an http"):
        api_options("abc.supabase.co", "k", "a@b.c", "pw", None, 100)


def _html_502() -> web.Application:
    async def bad_gateway(_: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>502 Bad Gateway</html>",
                            content_type="text/html")  # fmt: skip

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", bad_gateway)
    return app


def _json_503() -> web.Application:
    async def no_database(_: web.Request) -> web.Response:
        return web.json_response({"msg": "no database connection available"}, status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", no_database)
    return app


def _sign_in_error(app: web.Application) -> BackendUnavailable:
    """What sign_in raises against ``app`` served on loopback."""

    async def main() -> BackendUnavailable:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        project = SupabaseProject(url=f"http://127.0.0.1:{port}", anon_key="k", email="a@b.c",
                                  password="pw")  # fmt: skip
        try:
            async with aiohttp.ClientSession() as http:
                with pytest.raises(BackendUnavailable) as refused:
                    await sign_in(http, project)
        finally:
            await runner.cleanup()
        return refused.value

    return asyncio.run(main())


def test_a_server_error_at_sign_in_points_at_the_server_not_the_password() -> None:
    # `backend stop` under a managed check: the reference API answered 503, and the
    # hint sent the user to check the test user's email, password and anon key.
    error = _sign_in_error(_json_503())
    assert "failed (503): no database connection available" in error.message
    assert "password" not in (error.hint or "") and "database" in (error.hint or "")


def test_an_html_answer_is_one_line_naming_the_url_and_status() -> None:
    line = _sign_in_error(_html_502()).one_line()
    assert "\n" not in line
    assert "/auth/v1/token answered 502 (text/html), not a Supabase API reply" in line


def _no_local_postgres(_: object) -> str:
    raise AssertionError("the managed cluster must not be started for a Supabase project")


def test_a_project_without_dsn_skips_the_sql_checks_and_needs_no_local_postgres(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from backend_checks.managed import ManagedPostgres

    monkeypatch.setattr(ManagedPostgres, "ensure", _no_local_postgres)
    project = SupabaseProject(url="http://127.0.0.1:9", anon_key="k", email="a@b.c", password="p")
    options = CheckOptions(only=["message_fetch", "bloat"], api=ApiOptions(project=project))
    results = run_check(None, options)
    assert results.run.backend is not None and results.run.backend.kind == "supabase"
    assert [(c.id, c.status) for c in results.checks] == [
        ("message_fetch", "skip"),
        ("bloat", "skip"),
    ]
    assert all("give --dsn" in c.reason for c in results.checks)


def test_the_api_preflight_runs_before_the_sql_suite() -> None:
    # The --dsn answers nothing either: the API's problem must be the one reported, at once.
    dead_db = "host=127.0.0.1 port=9 user=postgres dbname=x connect_timeout=2"
    project = SupabaseProject(url="http://127.0.0.1:9", anon_key="k", email="a@b.c", password="p")
    refused = CheckOptions(api=ApiOptions(project=project, plan="free"))
    with pytest.raises(UnsafeActionRefused, match="free plan"):
        run_check(dead_db, refused)
    with pytest.raises(BackendUnavailable, match=r"cannot reach http://127\.0\.0\.1:9"):
        run_check(dead_db, CheckOptions(api=ApiOptions(project=project)))


def test_an_api_that_stops_answering_mid_run_keeps_the_measured_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reference server was stopped while the storage checks signed in: the command
    # said "cannot reach ... check --supabase-url", exit 3, and wrote no results, so the
    # realtime checks already measured (their disconnects: the story's "no disconnects")
    # were lost.
    from backend_checks import api_checks, realtime_checks, storage_checks

    measured = [
        Check(id="subscription_setup", title="t", category="realtime", status="pass", value=1),
        Check(id="realtime_broadcast", title="t", category="realtime", status="fail", value=9),
    ]

    failure: BackendUnavailable = api_checks.ApiUnreachable(
        "cannot reach http://127.0.0.1:9: connection refused", hint="check --supabase-url"
    )

    def gone(*_: object, **__: object) -> list[Check]:
        raise failure

    monkeypatch.setattr(realtime_checks, "realtime_checks", lambda *_, **__: measured)
    monkeypatch.setattr(storage_checks, "storage_checks", gone)
    project = SupabaseProject(url="http://127.0.0.1:9", anon_key="k", email="a@b.c", password="p")
    checks = api_checks._run(project, ApiOptions(project=project), None)
    assert [(c.id, c.status) for c in checks] == [
        ("subscription_setup", "pass"),
        ("realtime_broadcast", "fail"),
        ("storage_upload_5mb", "error"),
        ("storage_download_5mb", "error"),
        ("signed_url", "error"),
    ]
    assert "stopped answering during the run: cannot reach" in (checks[-1].reason or "")
    # An API that answered "no" did not stop answering: its words and hint stand.
    failure = BackendUnavailable("sign-in of a@b.c refused (400): bad password",
                                 hint="check the test user's email and password")  # fmt: skip
    reason = api_checks._run(project, ApiOptions(project=project), None)[-1].reason or ""
    assert "stopped answering" not in reason
    assert "refused (400): bad password" in reason and "check the test user's" in reason
