"""The load's preflight shows an API's error in one line without the key, the password
or the user's token, even when the API echoes the request back (docs/load.md)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from backend_checks.load.api import RestApi, preflight
from devicelab.errors import DeviceLabError

KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJlLW9mLWFub24"
PLAIN_KEY = "sb_publishable_PlainKey_42"
PASSWORD = "EchoPw_123"
TOKEN = "user-token-Tok_456"


class EchoApi:
    """An API on 127.0.0.1 that puts the request it got in its error: the worst an API
    may do. ``mode`` is the sign-in's status (400, 500; 200 signs in, and the schema
    read fails with a 400)."""

    def __init__(self) -> None:
        self.mode = 400
        self.url = ""


async def _echo(request: web.Request) -> web.Response:
    body = await request.text()
    said = (
        f"bad request: body={body} apikey={request.headers.get('apikey')}"
        f" auth={request.headers.get('Authorization')}"
    )
    mode = request.app[_API].mode
    if request.path.startswith("/auth/v1/token"):
        if mode in (400, 500):
            return web.json_response({"code": mode, "msg": said}, status=mode)
        return web.json_response({"access_token": TOKEN, "token_type": "bearer"})
    return web.json_response({"code": "PGRST", "message": said}, status=400)


_API = web.AppKey("api", EchoApi)


@pytest.fixture
def echo_api() -> Iterator[EchoApi]:
    """The :class:`EchoApi`, serving on a thread of its own."""
    api = EchoApi()
    app = web.Application()
    app[_API] = api
    app.router.add_route("*", "/{tail:.*}", _echo)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    api.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.mark.parametrize("mode", [400, 500, 200])
@pytest.mark.parametrize("key", [KEY, PLAIN_KEY])
def test_no_secret_in_the_preflight_error(echo_api: EchoApi, mode: int, key: str) -> None:
    echo_api.mode = mode
    api = RestApi(url=echo_api.url, anon_key=key, password=PASSWORD)
    with pytest.raises(DeviceLabError) as raised:
        preflight(api, "testuser1@example.com")
    said = f"{raised.value} {raised.value.hint}"
    assert "bad request" in said  # the API's error is shown ...
    leaked = [s for s in (key, PASSWORD, TOKEN, key[:40]) if s in said]
    assert not leaked, said  # ... without what it echoed
    assert "\n" not in str(raised.value)
    assert "***" in said
    if mode == 200:
        assert "messaging schema" in str(raised.value)
