"""Fixtures of the netshape tests: a real aiohttp upstream server on loopback."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from aiohttp import WSMsgType, web

from devicelab.models.network import NetworkProfile


def make_profile(
    rtt_ms: float, down_kbps: float | None, up_kbps: float | None, jitter_ms: float = 0.0
) -> NetworkProfile:
    """A test network profile."""
    return NetworkProfile(
        id="test",
        label="test",
        source="tests",
        rtt_ms=rtt_ms,
        down_kbps=down_kbps,
        up_kbps=up_kbps,
        jitter_ms=jitter_ms,
    )


@pytest.fixture(name="make_profile", scope="session")
def make_profile_fixture() -> object:
    """The ``make_profile`` helper, as a fixture."""
    return make_profile


async def _bytes(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("n", "0"))
    response = web.StreamResponse(headers={"Content-Length": str(size)})
    await response.prepare(request)
    block = b"x" * 65536
    for start in range(0, size, len(block)):
        await response.write(block[: min(len(block), size - start)])
    await response.write_eof()
    return response


async def _sink(request: web.Request) -> web.Response:
    return web.Response(text=str(len(await request.read())))


async def _burst(request: web.Request) -> web.WebSocketResponse:
    """On each text message 'burst N', send N messages at once, each with its send time."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT and msg.data.startswith("burst"):
            for i in range(int(msg.data.split()[1])):
                await ws.send_str(f"{i} {time.time()}")
        elif msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


class Upstream:
    """An aiohttp server in its own thread: /bytes?n=N, POST /sink, /ws (burst and echo)."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/bytes", _bytes)
        app.router.add_post("/sink", _sink)
        app.router.add_get("/ws", _burst)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Upstream:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="session", autouse=True)
def quick_gil_handoff() -> Iterator[None]:
    """The in-process proxy, the upstream server and the client share one GIL here: hand
    it over every 0.5 ms instead of 5 ms so that waiting for it does not pass for delay."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(previous)


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()
