"""The usbmux protocol's framing, as usbmuxd speaks it to its clients, and lockdownd's.

A usbmux message is a 16-byte little-endian header (length of the whole message,
version, message type, tag) then a payload. Version 1 carries XML plists in messages of
type 8 (``PLIST``); version 0 is the older binary protocol, of which only the result
message is built here (usbmuxd answers a client it cannot read yet in binary). A reply
repeats the request's tag; notifications (``Attached``, ``Detached``) carry tag 0.

Once a ``Connect`` succeeds the socket is a plain pipe to the device's port; lockdownd
(port 62078) frames each plist behind its length as a 4-byte big-endian number.

Reference: libimobiledevice ``usbmuxd`` (``src/usbmuxd-proto.h``, ``src/client.c``) and
``libimobiledevice`` (``src/lockdown.c``).
"""

from __future__ import annotations

import asyncio
import plistlib
import struct
from typing import Any

__all__ = [
    "HEADER",
    "LOCKDOWN_PORT",
    "MAX_MESSAGE",
    "MESSAGE_CONNECT",
    "MESSAGE_LISTEN",
    "MESSAGE_PLIST",
    "MESSAGE_RESULT",
    "RESULT_BADCOMMAND",
    "RESULT_BADDEV",
    "RESULT_BADVERSION",
    "RESULT_CONNREFUSED",
    "RESULT_OK",
    "UsbmuxMessage",
    "WireError",
    "pack",
    "pack_plist",
    "pack_result",
    "read_lockdown",
    "read_message",
    "write_lockdown",
]

HEADER = struct.Struct("<4I")  # length (header included), version, message, tag
MESSAGE_RESULT = 1
MESSAGE_CONNECT = 2
MESSAGE_LISTEN = 3
MESSAGE_PLIST = 8
RESULT_OK = 0
RESULT_BADCOMMAND = 1
RESULT_BADDEV = 2
RESULT_CONNREFUSED = 3
RESULT_BADVERSION = 6
# usbmuxd's command buffer: a longer message makes it drop the client.
MAX_MESSAGE = 0x10000
LOCKDOWN_PORT = 62078
_LOCKDOWN_MAX = 1 << 20


class WireError(Exception):
    """The peer sent something usbmuxd would drop the connection for."""


class UsbmuxMessage:
    """One message from a client: its header fields and its payload."""

    __slots__ = ("message", "payload", "tag", "version")

    def __init__(self, version: int, message: int, tag: int, payload: bytes) -> None:
        self.version = version
        self.message = message
        self.tag = tag
        self.payload = payload

    def plist(self) -> dict[str, Any]:
        """The payload as a plist dict; raises WireError when it is not one."""
        try:
            value = plistlib.loads(self.payload)
        except Exception as exc:  # plistlib raises several types on bad input
            raise WireError(f"payload is not a plist: {exc}") from exc
        if not isinstance(value, dict):
            raise WireError("payload plist is not a dict")
        return value


async def read_message(reader: asyncio.StreamReader) -> UsbmuxMessage:
    """Read one message; raises IncompleteReadError at EOF, WireError on a bad length."""
    header = await reader.readexactly(HEADER.size)
    length, version, message, tag = HEADER.unpack(header)
    if length < HEADER.size or length > MAX_MESSAGE:
        raise WireError(f"message length {length} is out of range")
    payload = await reader.readexactly(length - HEADER.size)
    return UsbmuxMessage(version, message, tag, payload)


def pack(version: int, message: int, tag: int, payload: bytes = b"") -> bytes:
    """The bytes of one message: header then payload."""
    return HEADER.pack(HEADER.size + len(payload), version, message, tag) + payload


def pack_plist(tag: int, body: dict[str, Any]) -> bytes:
    """A version 1 plist message (XML, as libplist writes it)."""
    return pack(1, MESSAGE_PLIST, tag, plistlib.dumps(body, fmt=plistlib.FMT_XML))


def pack_result(version: int, tag: int, number: int) -> bytes:
    """A result: ``{MessageType: Result, Number: n}`` in version 1, a binary u32 in 0."""
    if version == 1:
        return pack_plist(tag, {"MessageType": "Result", "Number": number})
    return pack(0, MESSAGE_RESULT, tag, struct.pack("<I", number))


async def read_lockdown(reader: asyncio.StreamReader) -> dict[str, Any]:
    """Read one lockdownd request; raises IncompleteReadError at EOF, WireError if bad."""
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    if length > _LOCKDOWN_MAX:
        raise WireError(f"lockdown frame of {length} bytes")
    try:
        value = plistlib.loads(await reader.readexactly(length))
    except Exception as exc:  # plistlib raises several types on bad input
        raise WireError(f"lockdown frame is not a plist: {exc}") from exc
    if not isinstance(value, dict):
        raise WireError("lockdown plist is not a dict")
    return value


def write_lockdown(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
    """Queue one lockdownd reply: big-endian length then the XML plist."""
    data = plistlib.dumps(body, fmt=plistlib.FMT_XML)
    writer.write(struct.pack(">I", len(data)) + data)
