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
import contextlib
import logging
import socket
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


async def _http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> bytes:
    """Send one HTTP/1.1 request on a kept-alive connection; its answer's body."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


def test_a_connection_that_carried_a_control_request_is_cut_like_any_other(
    upstream: Any, make_profile: Any
) -> None:
    # A connection that had once asked the control endpoint was never cut by going offline:
    # a 2 MB download on it went on to the end through 3 s offline.
    size = 2_000_000  # 4 s at 4000 kbps

    async def main(proxy: ShapedProxy) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        status = (
            b"GET http://netshape.devicelab/status HTTP/1.1\r\nhost: netshape.devicelab\r\n\r\n"
        )
        await _http_exchange(reader, writer, status)
        host = upstream.base.removeprefix("http://")
        writer.write(
            f"GET {upstream.base}/bytes?n={size} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        received = len(await reader.read(1 << 16))
        # Offline through the control endpoint, on another connection: it is answered.
        async with (
            aiohttp.ClientSession() as session,
            session.post("http://netshape.devicelab/offline?seconds=3", proxy=proxy.url) as r,
        ):
            answer = await r.read()
        with contextlib.suppress(ConnectionError):
            while received < size and (data := await reader.read(1 << 16)):
                received += len(data)
        writer.close()
        return received, answer

    with ShapedProxy(make_profile(40, 4000, 4000)) as proxy:
        received, answer = asyncio.run(main(proxy))
    assert answer == b'{"ok": true}'
    assert received < size / 2, received  # cut at once, not 4 s later at the end


def test_requests_refused_offline_are_logged_once_a_hundred_times(
    make_profile: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Each request refused while offline was a log line: a client retrying at once filled
    # stderr. Going offline again says the first refusal again.
    caplog.set_level(logging.INFO, logger="devicelab.netshape")
    request = b"GET http://127.0.0.1:9/ HTTP/1.1\r\nhost: 127.0.0.1:9\r\n\r\n"

    def refused(times: int) -> None:
        for _ in range(times):
            with socket.create_connection((proxy.host, proxy.port)) as retry:
                retry.sendall(request)
                assert retry.recv(1) == b""  # cut without an answer

    with ShapedProxy(make_profile(0, None, None)) as proxy:
        proxy.go_offline()
        refused(200)
        proxy.go_online()
        proxy.go_offline()
        refused(1)
    said = [r.getMessage() for r in caplog.records if "the link is offline" in r.getMessage()]
    assert said == [
        "refused a request of client 127.0.0.1: the link is offline",
        "refused a request of client 127.0.0.1: the link is offline (100 times)",
        "refused a request of client 127.0.0.1: the link is offline (200 times)",
        "refused a request of client 127.0.0.1: the link is offline",
    ]
