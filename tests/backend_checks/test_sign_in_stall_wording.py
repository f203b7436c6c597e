"""What the sign-in says when the API takes the connection and never answers (an outside
tester: "cannot reach http://127.0.0.1:43243: TimeoutError:  (hint: check
--supabase-url ...)" after 30 s, against a server that was there and stalled).

The API is a real HTTP server on 127.0.0.1 that holds every request open; the wait for an
answer is made short the two ways the callers set it (a total, as ``backend check``'s
preflight does; an answer wait, as the realtime and storage checks do).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from backend_checks.supabase_auth import ApiUnreachable, SupabaseProject, sign_in
from tests.backend_checks.served_app import served


def _stalling() -> web.Application:
    forever = asyncio.Event()

    async def stall(_: web.Request) -> web.Response:
        await forever.wait()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stall)
    return app


@pytest.fixture
def stalled_api() -> Iterator[str]:
    """The base URL of an API on 127.0.0.1 that accepts and never answers."""
    with served(_stalling()) as url:
        yield url


def _sign_in(url: str, timeout: aiohttp.ClientTimeout) -> ApiUnreachable:
    project = SupabaseProject(url=url, anon_key="anon-Key9", email="t@example.com", password="pw")

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await sign_in(http, project)

    with pytest.raises(ApiUnreachable) as caught:
        asyncio.run(run())
    return caught.value


@pytest.mark.parametrize(
    "timeout",
    [aiohttp.ClientTimeout(total=0.5), aiohttp.ClientTimeout(sock_connect=0.5, sock_read=0.5)],
    ids=["total", "answer-wait"],
)
def test_a_stalled_api_is_no_answer_not_unreachable(
    stalled_api: str, timeout: aiohttp.ClientTimeout
) -> None:
    started = time.monotonic()
    caught = _sign_in(stalled_api, timeout)
    assert time.monotonic() - started < 5
    line = caught.one_line()
    assert line.startswith(f"no answer from {stalled_api} within 0.5 s"), line
    assert "accepted the connection" in line and "cannot reach" not in line
    assert "TimeoutError" not in line and "responsive" in (caught.hint or "")
    assert "--supabase-url" not in (caught.hint or "")  # the URL is right: it answered TCP


def test_a_refused_connection_is_still_cannot_reach_with_its_reason() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    caught = _sign_in(url, aiohttp.ClientTimeout(total=5))
    assert caught.message.startswith(f"cannot reach {url}: ClientConnectorError: "), caught
    assert "--supabase-url" in (caught.hint or "")
