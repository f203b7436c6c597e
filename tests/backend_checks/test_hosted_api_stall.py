"""An API that stops answering during the checks (an outside tester stopped `backend serve`
with SIGSTOP: the check still ran after 164 s). The checks end in bounded time, the ones
not measured are ``error`` (docs/realtime.md).

The API here is a real HTTP server on 127.0.0.1 that accepts every request and never
answers it, or answers the sign-in and then stalls; the checks' wait for an answer is
made short through ``answer_timeout_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiohttp import web

from backend_checks.api_checks import (
    ApiOptions,
    ApiUnreachable,
    RealtimeLoad,
    StorageLoad,
    SupabaseProject,
    run_api_checks,
)
from backend_checks.realtime_checks import realtime_checks
from tests.backend_checks.served_app import served

#: The wait the checks are given for an answer (the default is 30 s).
SHORT = 0.5
#: Far below aiohttp's 300 s default, far above what SHORT allows.
BOUND_S = 15.0


def _app(sign_in: bool) -> web.Application:
    """A server that holds every request open, except (``sign_in``) the test user's
    sign-in and conversation list, answered as Supabase does."""
    forever = asyncio.Event()

    async def stall(_: web.Request) -> web.Response:
        await forever.wait()
        return web.Response()

    async def token(request: web.Request) -> web.Response:
        if not sign_in:
            return await stall(request)
        return web.json_response({"access_token": "t.k.n", "user": {"id": "u-1"}})

    async def conversations(request: web.Request) -> web.Response:
        if not sign_in:
            return await stall(request)
        return web.json_response([{"id": "c-1"}])

    app = web.Application()
    app.router.add_post("/auth/v1/token", token)
    app.router.add_get("/rest/v1/conversations", conversations)
    app.router.add_route("*", "/{tail:.*}", stall)
    return app


@pytest.fixture(params=[False, True], ids=["stalled", "stalls-after-sign-in"])
def stalled_api(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a stalling API on 127.0.0.1, served by a thread of its own."""
    with served(_app(request.param)) as url:
        yield url


def _project(url: str) -> SupabaseProject:
    return SupabaseProject(url=url, anon_key="anon-key", email="t@example.com", password="pw")


def test_realtime_checks_end_when_the_api_stalls(stalled_api: str) -> None:
    started = time.monotonic()
    load = RealtimeLoad(subscribers=2, answer_timeout_s=SHORT, timeout_s=1)
    try:
        checks = realtime_checks(_project(stalled_api), load)
    except ApiUnreachable as exc:  # the sign-in itself got no answer
        assert "no answer from" in exc.message and "accepted the connection" in exc.message
    else:  # signed in, then the websockets got no answer: infrastructure, not a fail
        assert [c.status for c in checks] == ["error", "error"], [c.reason for c in checks]
    assert time.monotonic() - started < BOUND_S


def test_api_checks_are_errors_in_bounded_time(stalled_api: str) -> None:
    options = ApiOptions(
        project=_project(stalled_api),
        realtime=RealtimeLoad(subscribers=2, answer_timeout_s=SHORT, timeout_s=1),
        # More than loopback's socket buffers hold: the upload itself stalls, unread.
        storage=StorageLoad(size_bytes=32 * 1024 * 1024, repeats=2, answer_timeout_s=SHORT),
    )
    started = time.monotonic()
    checks = run_api_checks(None, options)
    assert time.monotonic() - started < BOUND_S
    # Nothing was measured: every check says why (the API stopped answering), none fails.
    assert [c.status for c in checks] == ["error"] * 5, [c.reason for c in checks]
    reason = checks[0].reason or ""
    assert "Timeout" in reason or "no answer from" in reason, reason
