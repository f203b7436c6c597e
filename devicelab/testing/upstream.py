"""A loopback upstream server to measure a shaped link against (tests and benchmarks).

Routes: ``GET /`` a tiny page, ``GET /bytes?n=N`` N bytes streamed in 64 KiB blocks,
``POST /sink`` reads the body and answers its length, ``GET /ws`` a WebSocket that
answers ``burst N`` with N messages ``"<i> <send time, ms since the epoch>"`` sent at
once, and echoes anything else. Every request's path and arrival time (``time.time()``)
is kept in ``Upstream.seen`` (the last 1,000).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Self

from aiohttp import WSMsgType, web

__all__ = ["Upstream", "upstream_app"]

_BLOCK = b"x" * 65536


async def _index(request: web.Request) -> web.Response:
    return web.Response(text="<!doctype html><title>devicelab</title>", content_type="text/html")


async def _bytes(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("n", "0"))
    response = web.StreamResponse(headers={"Content-Length": str(size)})
    await response.prepare(request)
    for start in range(0, size, len(_BLOCK)):
        await response.write(_BLOCK[: min(len(_BLOCK), size - start)])
    await response.write_eof()
    return response


async def _sink(request: web.Request) -> web.Response:
    return web.Response(text=str(len(await request.read())))


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        if msg.data.startswith("burst"):
            for i in range(int(msg.data.split()[1])):
                await ws.send_str(f"{i} {time.time() * 1000}")
        else:
            await ws.send_str(msg.data)
    return ws


SEEN = web.AppKey("seen", deque[tuple[str, float]])


@web.middleware
async def _note(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request.app[SEEN].append((request.path_qs, time.time()))
    return await handler(request)


def upstream_app(max_body: int = 64 * 1024 * 1024) -> web.Application:
    """The aiohttp application of the routes above; bodies up to ``max_body`` bytes."""
    app = web.Application(client_max_size=max_body, middlewares=[_note])
    app[SEEN] = deque(maxlen=1000)
    app.router.add_get("/", _index)
    app.router.add_get("/bytes", _bytes)
    app.router.add_post("/sink", _sink)
    app.router.add_get("/ws", _ws)
    return app


class Upstream:
    """:func:`upstream_app` served on 127.0.0.1 from a thread of its own (a free port),
    over TLS when given an ``ssl_context`` (server side, its certificate loaded).

    Lifecycle: ``start()`` returns once it listens (``base`` is its URL); ``stop()``
    closes it. Also a context manager.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = 0
        self._ssl = ssl_context
        self._app = upstream_app()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(self._app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._ssl).start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    @property
    def seen(self) -> list[tuple[str, float]]:
        """(path with query, arrival time) of the requests served, oldest first."""
        seen: deque[tuple[str, float]] = self._app[SEEN]
        return list(seen)

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` when serving TLS)."""
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Serve; returns self once listening. Raises TimeoutError after 10 s."""
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the upstream server did not start")
        return self

    def stop(self) -> None:
        """Close the server and join its thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
