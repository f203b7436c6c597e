"""Going offline as the server sees it: the device's connections are cut, and the server's
side of each is lost abruptly (a reset), never closed politely.

A real radio drop gives the server no WebSocket CLOSE frame and no clean end of stream;
mitmproxy, left alone, answers the cut client side by closing the server side cleanly
(a CLOSE 1000 on a WebSocket, a FIN on HTTP), which a server takes for the device's own
goodbye. The servers here are real aiohttp servers on loopback that note how each
connection ended.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from devicelab.netshape.proxy import ShapedProxy


class _Ends:
    """A loopback server whose WebSocket and streaming handlers note how they ended."""

    def __init__(self) -> None:
        self.ends: list[dict[str, Any]] = []
        self.base = self.stream_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
        close_frame = msg.type == WSMsgType.CLOSE
        self.ends.append({"kind": "ws", "code": ws.close_code, "close_frame": close_frame})
        return ws

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A raw HTTP/1.1 event stream that tells a clean end of stream (FIN) from a reset."""
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )

        async def tick() -> None:
            while True:
                writer.write(b"c\r\ndata: tick\n\n\r\n")
                await asyncio.sleep(0.05)

        ticking = asyncio.ensure_future(tick())
        try:
            end = "fin" if await reader.read() == b"" else "data"
        except ConnectionResetError:
            end = "reset"
        ticking.cancel()
        writer.close()
        self.ends.append({"kind": "stream", "end": end})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        self._raw = await asyncio.start_server(self._stream, "127.0.0.1", 0)
        self.stream_url = f"http://127.0.0.1:{self._raw.sockets[0].getsockname()[1]}/stream"

    def __enter__(self) -> _Ends:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._raw.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def ends() -> Iterator[_Ends]:
    with _Ends() as server:
        yield server


def test_offline_loses_the_server_side_abruptly_not_with_a_clean_close(
    ends: _Ends, make_profile: Any
) -> None:
    async def main(proxy: ShapedProxy) -> list[str]:
        seen: list[str] = []
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(f"{ends.base}/ws", proxy=proxy.url, autoping=False)
            stream = await s.get(ends.stream_url, proxy=proxy.url)
            await stream.content.readuntil(b"\n\n")
            await ws.send_str("hello")
            await asyncio.sleep(0.2)
            await asyncio.to_thread(proxy.go_offline, 5)
            seen.append((await ws.receive(timeout=5)).type.name)
            with pytest.raises(aiohttp.ClientError):
                while await stream.content.read(1 << 16):
                    pass
            await ws.close()
        return seen

    with ShapedProxy(make_profile(40, None, None)) as proxy:
        seen = asyncio.run(main(proxy))
        deadline = time.monotonic() + 3
        while len(ends.ends) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    # The device side is cut, as documented.
    assert seen[0] in ("CLOSED", "ERROR")
    by_kind = {end["kind"]: end for end in ends.ends}
    # The server got no CLOSE frame and no code 1000: the connection was lost (1006).
    assert by_kind["ws"]["close_frame"] is False, by_kind
    assert by_kind["ws"]["code"] != 1000, by_kind
    # A streaming response's server reads a reset, not a clean end of stream.
    assert by_kind["stream"]["end"] == "reset", by_kind
