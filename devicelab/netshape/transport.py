"""Stream wrappers that put a client connection's bytes through its emulated link.

mitmproxy reads a client with ``reader.read(n)`` and writes it with ``writer.write`` /
``await writer.drain()``; these wrappers keep that contract, so shaping happens below
every protocol mitmproxy speaks (HTTP/1, HTTP/2, TLS, WebSocket, raw TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Protocol

from devicelab.netshape.link import Channel, Pipe

__all__ = ["ShapedReader", "ShapedWriter"]

_READ_SIZE = 65535


class _Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    def is_closing(self) -> bool: ...

    def write_eof(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class ShapedReader:
    """Reads the device's bytes after they have crossed the uplink.

    A pump task reads the socket as the bytes come (pausing when the link's backlog is
    full, so TCP backpressure reaches the device) and hands them to the uplink pipe.
    """

    def __init__(self, real: _Reader, uplink: Channel) -> None:
        self._real = real
        self._ready: deque[bytes] = deque()
        self._eof = False
        self._error: OSError | None = None
        self._wakeup = asyncio.Event()
        self.pipe: Pipe = uplink.pipe(self._on_data)
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    def _on_data(self, data: bytes) -> None:
        self._ready.append(data)
        self._wakeup.set()

    def _on_eof(self) -> None:
        self._eof = True
        self._wakeup.set()

    async def _pump(self) -> None:
        try:
            while True:
                await self.pipe.wait_for_space()
                data = await self._real.read(_READ_SIZE)
                if not data:
                    break
                self.pipe.send(data)
        except OSError as exc:
            self._error = exc
        except asyncio.CancelledError:
            self._on_eof()
            raise
        # The end of the stream crosses the link after the last bytes.
        self.pipe.after_all(self._on_eof)

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes that crossed the uplink; ``b""`` at the end of the stream.

        Raises OSError when the socket failed (after the bytes before the failure).
        """
        while not self._ready:
            if self._eof or self.pipe.aborted:
                if self._error is not None:
                    raise self._error
                return b""
            self._wakeup.clear()
            await self._wakeup.wait()
        # Hand over everything that has arrived (up to n): one protocol event per read,
        # not one per link chunk.
        limit = n if n >= 0 else 1 << 62
        parts, size = [], 0
        while self._ready and size < limit:
            data = self._ready.popleft()
            if size + len(data) > limit:
                self._ready.appendleft(data[limit - size :])
                data = data[: limit - size]
            parts.append(data)
            size += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def abort(self) -> None:
        """Stop reading; the reader returns end of stream."""
        self.pipe.abort()
        self._pump_task.cancel()
        self._wakeup.set()


class ShapedWriter:
    """Writes to the device through the downlink; closing waits for the bytes in flight."""

    def __init__(self, real: _Writer, downlink: Channel) -> None:
        self._real = real
        self._closing = False
        self.pipe: Pipe = downlink.pipe(self._deliver)

    def _deliver(self, data: bytes) -> None:
        if not self._real.is_closing():
            self._real.write(data)

    def write(self, data: bytes) -> None:
        """Queue ``data`` on the downlink."""
        self.pipe.send(data)

    async def drain(self) -> None:
        """Wait until the downlink backlog is under its limit and the socket has room.

        Raises OSError (ConnectionError) when the socket failed.
        """
        await self.pipe.wait_for_space()
        await self._real.drain()

    def is_closing(self) -> bool:
        """True once ``close`` was called or the socket is closing."""
        return self._closing or self._real.is_closing()

    def close(self) -> None:
        """Close the socket once every queued byte has crossed the link."""
        if self._closing:
            return
        self._closing = True
        self.pipe.after_all(self._real.close)

    def write_eof(self) -> None:
        """Half-close the socket once every queued byte has crossed the link."""

        def half_close() -> None:
            with contextlib.suppress(OSError, RuntimeError):
                self._real.write_eof()

        self.pipe.after_all(half_close)

    def abort(self) -> None:
        """Cut the connection now, dropping the bytes in flight (the link went offline)."""
        self.pipe.abort()
        self._closing = True
        transport = self._real.get_extra_info("transport") or getattr(self._real, "transport", None)
        if transport is not None and hasattr(transport, "abort"):
            transport.abort()
        else:
            self._real.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The socket's extra info (peername, sockname, ...)."""
        return self._real.get_extra_info(name, default)

    async def wait_closed(self) -> None:
        """Wait until the socket is closed."""
        wait = getattr(self._real, "wait_closed", None)
        if wait is not None:
            with contextlib.suppress(OSError):
                await wait()
