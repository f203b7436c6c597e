"""A tiny HTTP/1.1 server and proxy client on loopback, for the self-check (stdlib only).

Server routes: ``GET /bytes?n=N`` answers N bytes; ``POST /sink`` reads the body and
answers its length. The client speaks absolute-form HTTP/1.1 to a proxy over one
keep-alive connection.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs, urlsplit

__all__ = ["LoopbackServer", "ProxyClient"]

_CHUNK = 256 << 10


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


class LoopbackServer:
    """The upstream server of the self-check; ``async with`` starts it on a free port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> LoopbackServer:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            # Open keep-alive connections would outlive the server and be cancelled noisily.
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    @property
    def base(self) -> str:
        """The server's base URL."""
        return f"http://{self.host}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    request_line, headers = await _read_head(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, target, _ = request_line.split(" ", 2)
                url = urlsplit(target)
                length = int(headers.get("content-length", "0"))
                received = 0
                while received < length:
                    data = await reader.read(min(_CHUNK, length - received))
                    if not data:
                        return
                    received += len(data)
                if method == "GET" and url.path == "/bytes":
                    size = int(parse_qs(url.query).get("n", ["0"])[0])
                    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
                    block = b"x" * min(size, _CHUNK)
                    for start in range(0, size, _CHUNK):
                        writer.write(block[: min(_CHUNK, size - start)])
                        await writer.drain()
                else:
                    body = str(received).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                    writer.write(body)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()


class ProxyClient:
    """One keep-alive HTTP/1.1 connection to a proxy; each call returns its duration (s)."""

    def __init__(self, proxy_host: str, proxy_port: int) -> None:
        self._address = (proxy_host, proxy_port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> ProxyClient:
        self._reader, self._writer = await asyncio.open_connection(*self._address)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    async def get(self, url: str) -> float:
        """Time a GET of ``url`` until its last body byte; raises ConnectionError."""
        return await self._exchange("GET", url, 0)

    async def post(self, url: str, size: int) -> float:
        """Time a POST of ``size`` bytes to ``url`` until the answer; raises ConnectionError."""
        return await self._exchange("POST", url, size)

    async def _exchange(self, method: str, url: str, size: int) -> float:
        assert self._reader is not None and self._writer is not None
        host = urlsplit(url).netloc
        start = time.perf_counter()
        self._writer.write(
            f"{method} {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        block = b"y" * min(size, _CHUNK)
        for offset in range(0, size, _CHUNK):
            self._writer.write(block[: min(_CHUNK, size - offset)])
            await self._writer.drain()
        try:
            status, headers = await _read_head(self._reader)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError("the proxy closed the connection") from exc
        if " 200 " not in f"{status} ":
            raise ConnectionError(f"the proxy answered {status!r}")
        await self._reader.readexactly(int(headers.get("content-length", "0")))
        return time.perf_counter() - start
