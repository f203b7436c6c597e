"""The adb transport protocol's framing, as a device (adbd) speaks it to the adb server.

A message is a 24-byte little-endian header (command, arg0, arg1, data_length,
data_check, magic = command ^ 0xffffffff) and ``data_length`` bytes of payload. The
services on top use two more framings, both here: the smart-socket status replies
(``OKAY``, ``FAIL`` + 4-hex-digit length + text) and the shell protocol v2 packets
(``[id:1][length:4 LE][data]``). ``DeviceConnection`` is the device end of one
connection: the CNXN handshake, the streams opened on it and their flow control.

Reference: AOSP ``packages/modules/adb/protocol.txt``, ``adb.cpp``
(``handle_forward_request``) and ``shell_protocol.h``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "AUTH_RSAPUBLICKEY",
    "AUTH_SIGNATURE",
    "AUTH_TOKEN",
    "A_AUTH",
    "A_CLSE",
    "A_CNXN",
    "A_OKAY",
    "A_OPEN",
    "A_VERSION",
    "A_WRTE",
    "MAX_PAYLOAD",
    "SHELL_EXIT",
    "SHELL_STDERR",
    "SHELL_STDOUT",
    "DeviceConnection",
    "Message",
    "ProtocolError",
    "fail",
    "pack",
    "protocol_string",
    "read_message",
    "shell_packet",
]


def _command(name: bytes) -> int:
    return int(struct.unpack("<I", name)[0])


A_CNXN = _command(b"CNXN")
A_AUTH = _command(b"AUTH")
A_OPEN = _command(b"OPEN")
A_OKAY = _command(b"OKAY")
A_WRTE = _command(b"WRTE")
A_CLSE = _command(b"CLSE")
# The version from which the payload check may be left 0; we still fill it in, since
# older adb servers (before 0x01000001) verify it and newer ones ignore it.
A_VERSION = 0x01000001
# AUTH's arg0: the device's challenge, the server's signature of it, the server's key.
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
MAX_PAYLOAD = 256 * 1024

SHELL_STDOUT = 1
SHELL_STDERR = 2
SHELL_EXIT = 3

_HEADER = struct.Struct("<6I")
_ACK_TIMEOUT = 10.0
logger = logging.getLogger("devicelab.testing.adb_wire")
_NAMES = {A_CNXN: "CNXN", A_AUTH: "AUTH", A_OPEN: "OPEN", A_OKAY: "OKAY"}
_NAMES |= {A_WRTE: "WRTE", A_CLSE: "CLSE"}


class ProtocolError(Exception):
    """The peer sent something that is not an adb message (bad magic, oversize payload)."""


@dataclass(frozen=True)
class Message:
    """One adb message: its command, its two arguments and its payload."""

    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    @property
    def name(self) -> str:
        """The command's four letters (``"OPEN"``), or its number when unknown."""
        return _NAMES.get(self.command, hex(self.command))


def pack(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    """The bytes of one message: header then payload."""
    check = sum(data) & 0xFFFFFFFF  # adb's "crc32" is a plain byte sum
    header = _HEADER.pack(command, arg0, arg1, len(data), check, command ^ 0xFFFFFFFF)
    return header + data


async def read_message(reader: asyncio.StreamReader, max_payload: int = MAX_PAYLOAD) -> Message:
    """Read one message; returns it.

    Raises asyncio.IncompleteReadError when the peer closes, ProtocolError on a bad header.
    """
    header = await reader.readexactly(_HEADER.size)
    command, arg0, arg1, length, _check, magic = _HEADER.unpack(header)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic {magic:#x} for command {command:#x}")
    if length > max_payload:
        raise ProtocolError(f"payload of {length} bytes is over the {max_payload} maximum")
    data = await reader.readexactly(length) if length else b""
    return Message(command, arg0, arg1, data)


def protocol_string(text: str) -> bytes:
    """``text`` behind its length as 4 lowercase hex digits (adb's SendProtocolString)."""
    body = text.encode()
    return f"{len(body):04x}".encode() + body


def fail(reason: str) -> bytes:
    """A smart-socket failure reply: ``FAIL`` then the reason as a protocol string."""
    return b"FAIL" + protocol_string(reason)


def shell_packet(packet_id: int, data: bytes) -> bytes:
    """One shell protocol v2 packet: id, little-endian length, data."""
    return struct.pack("<BI", packet_id, len(data)) + data


@dataclass
class _Stream:
    """One opened service: the server's id for it, and whether our last WRTE is acked."""

    remote_id: int
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False


class DeviceConnection:
    """The device side of one adb server's TCP connection.

    ``run()`` answers the server's CNXN with ``banner`` (no AUTH), then serves each OPEN
    in a task: ``answer(service, transport)`` gives the bytes to send back, or None to
    refuse the service (CLSE). Replies go out as OKAY, WRTEs that each wait for the
    server's OKAY (adb's flow control), then CLSE. Returns when the server hangs up.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        banner: bytes,
        answer: Callable[[str, str], bytes | None],
        transport: str = "host-1",
        authorized: bool = True,
    ) -> None:
        self.reader, self.writer = reader, writer
        self.banner, self.answer, self.transport = banner, answer, transport
        self.authorized = authorized
        self.max_payload = MAX_PAYLOAD
        self.streams: dict[int, _Stream] = {}
        self.ids = itertools.count(1)
        self.tasks: set[asyncio.Task[None]] = set()

    def _send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        self.writer.write(pack(command, arg0, arg1, data))

    async def run(self) -> None:
        """Serve until the server hangs up or breaks the protocol; never raises those."""
        try:
            while True:
                self._dispatch(await read_message(self.reader))
                await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ProtocolError) as exc:
            logger.debug("adb connection %s ends: %r", self.transport, exc)
        finally:
            for task in self.tasks:
                task.cancel()
            self.writer.close()

    def _dispatch(self, message: Message) -> None:
        if message.command == A_CNXN:
            # Our payloads must fit the server's maximum as well as ours.
            self.max_payload = min(message.arg1 or MAX_PAYLOAD, MAX_PAYLOAD)
            if self.authorized:
                self._send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.banner)
            else:
                self._send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))
        elif message.command == A_AUTH and not self.authorized:
            # No key is ever accepted: a signature gets a new token, a public key waits
            # for the user's "Allow USB debugging?" that nobody answers. The adb server
            # lists the device as unauthorized.
            if message.arg0 == AUTH_SIGNATURE:
                self._send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))
        elif message.command == A_OPEN:
            service = message.data.rstrip(b"\0").decode(errors="replace")
            local_id = next(self.ids)
            self.streams[local_id] = stream = _Stream(message.arg0)
            task = asyncio.get_running_loop().create_task(self._serve(local_id, stream, service))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif message.command == A_OKAY:
            if (ready := self.streams.get(message.arg1)) is not None:
                ready.acked.set()
        elif message.command == A_WRTE:
            # Input (shell v2 stdin, window changes) is acknowledged and dropped.
            if message.arg1 in self.streams:
                self._send(A_OKAY, message.arg1, message.arg0)
        elif message.command == A_CLSE:
            if (closing := self.streams.pop(message.arg1, None)) is not None:
                closing.closed = True
                closing.acked.set()  # wakes a reply waiting for an OKAY that never comes
        else:
            logger.debug("ignoring %s from the adb server", message.name)

    async def _serve(self, local_id: int, stream: _Stream, service: str) -> None:
        try:
            reply = self.answer(service, self.transport)
        except Exception:
            logger.exception("fake adbd failed to answer %r", service)
            reply = None
        if reply is None:
            self.streams.pop(local_id, None)
            self._send(A_CLSE, 0, stream.remote_id)  # adbd's refusal of a service
            return
        self._send(A_OKAY, local_id, stream.remote_id)
        for start in range(0, len(reply), self.max_payload):
            stream.acked.clear()
            self._send(A_WRTE, local_id, stream.remote_id, reply[start : start + self.max_payload])
            try:
                await asyncio.wait_for(stream.acked.wait(), timeout=_ACK_TIMEOUT)
            except TimeoutError:
                logger.warning("adb server did not acknowledge %r; closing it", service)
                break
            if stream.closed:
                return
        self.streams.pop(local_id, None)
        self._send(A_CLSE, local_id, stream.remote_id)
        await self.writer.drain()
