"""Stream wrappers that put a client connection's bytes through its emulated link.

mitmproxy reads a client with ``reader.read(n)`` and writes it with ``writer.write`` /
``await writer.drain()``; these wrappers keep that contract, so shaping happens below
every protocol mitmproxy speaks (HTTP/1, HTTP/2, TLS, WebSocket, raw TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from devicelab.netshape.link import EARLY_S, Channel, Pipe, PreciseTimer

__all__ = [
    "ConnectionClock",
    "HeldWriter",
    "ServerReader",
    "ShapedReader",
    "ShapedWriter",
    "bytes_waiting",
]

_READ_SIZE = 65535
# mitmproxy handles a response in about a millisecond (five or more after an idle spell);
# the downlink takes bytes from the server's time of sending up to this far back.
_BACKDATE_MAX_S = 0.02


class _Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    def is_closing(self) -> bool: ...

    def write_eof(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


@dataclass
class ConnectionClock:
    """When one device connection's uplink bytes reach the far end, in loop time.

    The uplink hands bytes to mitmproxy once serialized, one one-way delay before they
    would arrive, so mitmproxy parses a request while it is still on the air (after an
    idle spell its parsing takes several milliseconds, which would otherwise add to every
    round trip). What mitmproxy then sends on holds until the bytes would have arrived:
    writes to the server wait in ``HeldWriter`` until ``up_due``; answers mitmproxy makes
    itself (CONNECT, its TLS handshake, errors) enter the downlink no earlier than
    ``up_due`` (``ShapedWriter``), so every round trip still costs the whole RTT.
    """

    up_due: float = 0.0  # the last bytes handed to mitmproxy arrive then
    up_release: float = 0.0  # ... and were handed over then
    server_rx: float = 0.0  # the server last sent bytes then

    def server_sent(self, now: float) -> float | None:
        """When the bytes written to the device now left the server, or None.

        When the server sent something since the device's last bytes were handed over,
        what is written now is (or answers) what the server sent: its journey down the
        link starts then, and mitmproxy's handling since is not part of the link. Capped
        at ``_BACKDATE_MAX_S`` ago, so a stalled proxy is not hidden.
        """
        if self.server_rx > self.up_release:
            return max(self.server_rx, now - _BACKDATE_MAX_S)
        return None

    def answer_floor(self, now: float) -> float | None:
        """The earliest time an answer written now may enter the downlink, or None.

        Only answers to uplink bytes still on the air are held: once the server has sent
        something since those bytes were handed over, what is written comes from it.
        """
        if self.up_due > now and self.server_rx <= self.up_release:
            return self.up_due
        return None


def bytes_waiting(reader: object, writer: _Writer) -> bool:
    """Whether the device has sent bytes that nobody read yet: in asyncio's buffer (the
    StreamReader's, private: best effort) or in the socket's.

    A client sends its request the moment it connects, but mitmproxy hands the connection
    to the addon a few milliseconds later (ten after an idle spell): bytes already waiting
    then arrived when the connection was accepted, and enter the link at that time.
    """
    if getattr(reader, "_buffer", None):
        return True
    try:
        import fcntl  # POSIX only: elsewhere only asyncio's buffer is looked at
        import termios

        sock = writer.get_extra_info("socket")
        queued = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (ImportError, AttributeError, OSError, ValueError):
        return False
    return int.from_bytes(queued, sys.byteorder) > 0


class ShapedReader:
    """Reads the device's bytes after they have crossed the uplink.

    A pump task reads the socket as the bytes come (pausing when the link's backlog is
    full, so TCP backpressure reaches the device) and hands them to the uplink pipe. With
    a ``clock``, the bytes are handed over once serialized and the clock says when they
    arrive (see ``ConnectionClock``).
    """

    def __init__(
        self,
        real: _Reader,
        uplink: Channel,
        clock: ConnectionClock | None = None,
        first_since: float | None = None,
    ) -> None:
        self._real = real
        # The first bytes entered the link then (loop time; see ``bytes_waiting``).
        self._first_since = first_since
        self._ready: deque[bytes] = deque()
        self._eof = False
        self._error: OSError | None = None
        self._wakeup = asyncio.Event()
        self._clock = clock
        self.pipe: Pipe = uplink.pipe(self._on_data, early=clock is not None)
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    def _on_data(self, data: bytes) -> None:
        if self._clock is not None:
            self._clock.up_due = self.pipe.delivered_due
            self._clock.up_release = asyncio.get_running_loop().time()
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
                since, self._first_since = self._first_since, None
                self.pipe.send(data, since=since)
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


class _WrappedWriter:
    """What a wrapped writer passes straight to the real one."""

    _real: _Writer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The socket's extra info (peername, sockname, ...)."""
        return self._real.get_extra_info(name, default)

    async def wait_closed(self) -> None:
        """Wait until the socket is closed."""
        wait = getattr(self._real, "wait_closed", None)
        if wait is not None:
            with contextlib.suppress(OSError):
                await wait()


class ShapedWriter(_WrappedWriter):
    """Writes to the device through the downlink; closing waits for the bytes in flight."""

    def __init__(
        self, real: _Writer, downlink: Channel, clock: ConnectionClock | None = None
    ) -> None:
        self._real = real
        self._closing = False
        self._clock = clock
        self.pipe: Pipe = downlink.pipe(self._deliver)

    def _deliver(self, data: bytes) -> None:
        if self._real.is_closing():
            # The device is gone (it reset or closed the connection): what is still queued
            # would only take its link's time from the device's other connections.
            self.pipe.abort()
            return
        self._real.write(data)

    def write(self, data: bytes) -> None:
        """Queue ``data`` on the downlink (an answer to bytes still on the air waits for
        them to arrive; bytes from the server enter the link when the server sent them;
        see ``ConnectionClock``)."""
        floor = since = None
        if self._clock is not None:
            now = asyncio.get_running_loop().time()
            floor = self._clock.answer_floor(now)
            if floor is None:
                since = self._clock.server_sent(now)
        self.pipe.send(data, floor, since)

    async def drain(self) -> None:
        """Wait until the downlink backlog is under its limit and the socket has room.

        Raises OSError (ConnectionError) when the socket failed.
        """
        await self.pipe.wait_for_space()
        await self._real.drain()

    def is_closing(self) -> bool:
        """True once ``close`` was called or the socket is closing."""
        return self._closing or self._real.is_closing()

    def device_gone(self) -> bool:
        """True when the socket itself is closing: nothing more can reach the device."""
        return self._real.is_closing()

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


def _reset(writer: _Writer) -> None:
    """Close ``writer``'s socket with a reset (RST): an abort alone sends a FIN, a clean
    end of stream to the peer."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(AttributeError, OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = writer.get_extra_info("transport") or getattr(writer, "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()
    else:
        writer.close()


class ServerReader:
    """The server side's reader, noting when the server last sent bytes."""

    def __init__(self, real: _Reader, clock: ConnectionClock) -> None:
        self._real = real
        self._clock = clock

    async def read(self, n: int = -1) -> bytes:
        """What the server sent (``b""`` at its end); raises OSError as the socket does."""
        data = await self._real.read(n)
        self._clock.server_rx = asyncio.get_running_loop().time()
        return data


class HeldWriter(_WrappedWriter):
    """The server side's writer: bytes wait until the device's bytes they carry would have
    crossed the uplink (``ConnectionClock.up_due`` when written), in order."""

    def __init__(self, real: _Writer, clock: ConnectionClock) -> None:
        self._real = real
        self._clock = clock
        self._held: deque[tuple[float, bytes | None]] = deque()  # None: end of stream
        self._close_after = False
        self._cut = False  # reset by ``abort``: nothing more goes out
        self._timer: PreciseTimer | None = None

    def write(self, data: bytes) -> None:
        """Write ``data`` now, or once the uplink bytes before it have arrived."""
        if self._cut:
            return
        loop = asyncio.get_running_loop()
        due = self._clock.up_due
        if not self._held and due <= loop.time():
            self._real.write(data)
            return
        self._hold(max(due, self._held[-1][0] if self._held else 0.0), data)

    def _hold(self, due: float, data: bytes | None) -> None:
        self._held.append((due, data))
        if self._timer is None:
            self._timer = PreciseTimer(due, self._release)

    def _release(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time() + EARLY_S
        while self._held and self._held[0][0] <= now:
            _, data = self._held.popleft()
            if self._real.is_closing():
                continue
            if data is None:
                with contextlib.suppress(OSError, RuntimeError):
                    self._real.write_eof()
            else:
                self._real.write(data)
        if self._held:
            self._timer = PreciseTimer(self._held[0][0], self._release)
        elif self._close_after:
            self._real.close()

    async def drain(self) -> None:
        """Wait until the socket has room; raises OSError (ConnectionError) when it failed."""
        await self._real.drain()

    def is_closing(self) -> bool:
        """True once ``close`` was called or the socket is closing."""
        return self._close_after or self._real.is_closing()

    def close(self) -> None:
        """Close the socket once the held bytes are written."""
        if self._held:
            self._close_after = True
        else:
            self._real.close()

    def write_eof(self) -> None:
        """Half-close the socket once the held bytes are written."""
        if self._cut:
            return
        if self._held:
            self._hold(self._held[-1][0], None)
        else:
            self._real.write_eof()

    def abort(self) -> None:
        """Drop the held bytes and reset the connection (the link went offline).

        A radio drop gives the server no clean end: mitmproxy, seeing the device side cut,
        would close this side politely (a WebSocket CLOSE 1000, a FIN), which a server
        takes for the device's own goodbye. A reset (RST) is what it gets instead, and
        whatever mitmproxy writes after the cut is dropped.
        """
        self._held.clear()
        self._cut = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        _reset(self._real)
