"""A storage upload the API reads slowly but steadily is measured, not cut as a stall
(a review found any upload slower than stall_s in all cut: aiohttp's socket read timeout
runs from the request's start and is reset only by bytes of the answer)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from backend_checks.api_checks import ApiUnreachable, SupabaseProject, stall_timeout
from backend_checks.storage_checks import _Outcome, _timed

PROJECT = SupabaseProject(
    url="http://127.0.0.1:1", anon_key="k.e.y", email="a@example.com", password="pw"
)


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _slow_reader(pause_s: float) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        read = 0
        async for piece in request.content.iter_chunked(64 * 1024):
            read += len(piece)
            await asyncio.sleep(pause_s)  # ~16 pauses for 1 MB: well past stall_s in all
        return web.json_response({"Key": "media/x", "read": read})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/storage/v1/object/media/x", upload)
    return app


def test_an_upload_read_slowly_but_steadily_is_measured() -> None:
    async def go() -> tuple[bytes | None, _Outcome]:
        runner, base = await _serve(_slow_reader(0.06))
        outcome = _Outcome("uploads")
        try:
            async with aiohttp.ClientSession(timeout=stall_timeout(0.3, total=30)) as http:
                body = await _timed(http, outcome, PROJECT, "POST",
                                    f"{base}/storage/v1/object/media/x",
                                    stall_s=0.3, data=b"x" * (1024 * 1024))  # fmt: skip
        finally:
            await runner.cleanup()
        return body, outcome

    body, outcome = asyncio.run(go())
    assert outcome.failures == [] and body is not None and b'"read": 1048576' in body
    assert len(outcome.samples) == 1 and outcome.samples[0] > 600  # it took its time


def test_a_whole_upload_past_the_total_is_said_as_such() -> None:
    async def go() -> None:
        runner, base = await _serve(_slow_reader(0.06))
        try:
            async with aiohttp.ClientSession(timeout=stall_timeout(0.3, total=0.5)) as http:
                await _timed(http, _Outcome("uploads"), PROJECT, "POST",
                             f"{base}/storage/v1/object/media/x",
                             stall_s=0.3, data=b"x" * (1024 * 1024))  # fmt: skip
        finally:
            await runner.cleanup()

    with pytest.raises(ApiUnreachable) as cut:
        asyncio.run(go())
    assert "within 0.5 s" in str(cut.value) and "no progress" not in str(cut.value)
