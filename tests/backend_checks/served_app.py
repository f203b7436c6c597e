"""An aiohttp application served on 127.0.0.1 by a loop thread of its own: the HTTP peer
(a stand-in API) of tests whose code under test is synchronous or runs in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from aiohttp import web


@contextlib.contextmanager
def served(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1; yields its base URL
    (``http://127.0.0.1:PORT``). On exit the server stops (requests still held open are
    cancelled after 0.1 s) and the loop thread is joined. Raises what binding raised."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="served-app", daemon=True)
    thread.start()
    holder: list[web.AppRunner] = []

    async def start() -> int:
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        holder.append(runner)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return int(runner.addresses[0][1])

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield f"http://127.0.0.1:{port}"
    finally:
        if holder:
            asyncio.run_coroutine_threadsafe(holder[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
