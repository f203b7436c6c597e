"""DTX, the wire protocol of Apple's instruments server, as the server side writes it.

A DTX message travels in one or more fragments. Each fragment opens with a 32-byte
little-endian header: magic 0x1F3D5B79, header size (32), fragment index and count,
data size, message identifier, conversation index (0 for a request or a push, 1 for the
reply to it), channel code (signed: a peer pushing on a channel the other side opened
sends the code negated) and transport flags (bit 0: the sender expects a reply). A
message of one fragment carries its bytes in it; a longer one sends a first fragment
with no body whose data size is the whole message's, then the pieces.

The message's bytes open with a 16-byte header (flags whose low byte is the message
type, auxiliary size, total size of auxiliary and payload), then the auxiliary: a
"primitive dictionary" of the call's arguments (keys null, values strings, integers,
doubles or buffers holding NSKeyedArchiver archives), then the payload: an archived
selector (a method call) or the archived object (a reply or a push).

The NSKeyedArchiver format is written and read here with plistlib, for the types DTX
carries: None, bool, int, float, str, bytes, list, dict, datetime (NSDate), NSError.

Reference: frida-core ``src/fruity/dtx.vala``; Apple's DTXConnectionServices headers.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import plistlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EXPECTS_REPLY",
    "MAGIC",
    "DtxError",
    "DtxMessage",
    "MessageType",
    "NSError",
    "archive",
    "build_aux",
    "parse_aux",
    "read_message",
    "unarchive",
]

MAGIC = 0x1F3D5B79
EXPECTS_REPLY = 1
_FRAGMENT = struct.Struct("<IIHHIIIiI")  # magic .. flags, 32 bytes
_PAYLOAD = struct.Struct("<IIQ")  # flags (type in the low byte), aux size, total size
_FRAGMENT_BODY = 128 * 1024  # where pymobiledevice3 splits a message, too
_MAX_MESSAGE = 32 * 1024 * 1024  # more than any sysmontap sample; a bigger one is garbage
_DICTIONARY = 0xF0  # the primitive-dictionary type; 0x100 is a flag Apple sets with it
_STRING, _BUFFER, _INT32, _INT64, _DOUBLE, _NULL = 1, 2, 3, 6, 9, 10
_COCOA_EPOCH = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)


class MessageType(enum.IntEnum):
    """The message types of the payload header."""

    OK = 0
    DATA = 1
    DISPATCH = 2
    OBJECT = 3
    ERROR = 4
    BARRIER = 5
    PRIMITIVE = 6
    COMPRESSED = 7


class DtxError(Exception):
    """The peer sent bytes that are not DTX: the server drops the connection."""


@dataclass(frozen=True)
class NSError:
    """An NSError as DTX archives it (the payload of an ERROR reply)."""

    domain: str
    code: int
    user_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class DtxMessage:
    """One assembled message; ``channel`` is the code as on the wire (signed)."""

    type: int
    identifier: int
    conversation: int = 0
    channel: int = 0
    expects_reply: bool = False
    aux: bytes = b""
    payload: bytes = b""

    def pack(self) -> bytes:
        """The message's fragments, ready to write."""
        body = (
            _PAYLOAD.pack(self.type, len(self.aux), len(self.aux) + len(self.payload))
            + self.aux
            + self.payload
        )
        flags = EXPECTS_REPLY if self.expects_reply else 0
        if len(body) <= _FRAGMENT_BODY:
            return self._fragment(0, 1, len(body), flags) + body
        pieces = [body[i : i + _FRAGMENT_BODY] for i in range(0, len(body), _FRAGMENT_BODY)]
        count = len(pieces) + 1
        out = [self._fragment(0, count, len(body), flags)]
        for index, piece in enumerate(pieces, start=1):
            out += [self._fragment(index, count, len(piece), flags), piece]
        return b"".join(out)

    def _fragment(self, index: int, count: int, size: int, flags: int) -> bytes:
        return _FRAGMENT.pack(MAGIC, _FRAGMENT.size, index, count, size, self.identifier,
                              self.conversation, self.channel, flags)  # fmt: skip


async def read_message(reader: asyncio.StreamReader) -> DtxMessage:
    """Read one whole message (all its fragments).

    Raises IncompleteReadError at EOF and DtxError on a bad header or size.
    """
    first = await _read_fragment(reader)
    _, _, index, count, size, identifier, conversation, channel, flags = first
    if index != 0:
        raise DtxError(f"message {identifier} starts with fragment {index}")
    if count == 1:
        body = await reader.readexactly(size)
    else:
        if size > _MAX_MESSAGE:
            raise DtxError(f"message {identifier} of {size} bytes")
        parts: list[bytes] = []
        for expected in range(1, count):
            header = await _read_fragment(reader)
            if header[2] != expected or header[5] != identifier:
                raise DtxError(f"fragment {header[2]} of {header[5]} interleaved in {identifier}")
            parts.append(await reader.readexactly(header[4]))
        body = b"".join(parts)
    if len(body) < _PAYLOAD.size:
        raise DtxError(f"message {identifier} has no payload header")
    kind, aux_size, total = _PAYLOAD.unpack_from(body)
    if total != len(body) - _PAYLOAD.size or aux_size > total:
        raise DtxError(f"message {identifier} declares {total} bytes, carries {len(body) - 16}")
    start = _PAYLOAD.size
    return DtxMessage(
        type=kind & 0xFF,
        identifier=identifier,
        conversation=conversation,
        channel=channel,
        expects_reply=bool(flags & EXPECTS_REPLY),
        aux=body[start : start + aux_size],
        payload=body[start + aux_size :],
    )


async def _read_fragment(reader: asyncio.StreamReader) -> tuple[int, ...]:
    header = _FRAGMENT.unpack(await reader.readexactly(_FRAGMENT.size))
    if header[0] != MAGIC:
        raise DtxError(f"bad fragment magic {header[0]:#x}")
    if header[1] < _FRAGMENT.size:
        raise DtxError(f"fragment header of {header[1]} bytes")
    await reader.readexactly(header[1] - _FRAGMENT.size)  # extensions nobody defines yet
    if header[3] == 0 or header[2] >= header[3] or header[4] > _MAX_MESSAGE:
        raise DtxError(f"fragment {header[2]}/{header[3]} of {header[4]} bytes")
    return header


# --- the auxiliary: a primitive dictionary of the arguments -------------------------------
def build_aux(args: Sequence[Any]) -> bytes:
    """The auxiliary carrying ``args``: ints as INT32 (INT64 when they do not fit), floats
    as doubles, anything else archived in a buffer (None as an empty one)."""
    if not args:
        return b""
    entries = bytearray()
    for arg in args:
        entries += struct.pack("<I", _NULL)
        if isinstance(arg, int) and not isinstance(arg, bool):
            fits = -(1 << 31) <= arg < (1 << 31)
            entries += struct.pack("<Ii", _INT32, arg) if fits else struct.pack("<Iq", _INT64, arg)
        elif isinstance(arg, float):
            entries += struct.pack("<Id", _DOUBLE, arg)
        else:
            data = b"" if arg is None else archive(arg)
            entries += struct.pack("<II", _BUFFER, len(data)) + data
    return struct.pack("<IIQ", 0x100 | _DICTIONARY, 0, len(entries)) + bytes(entries)


def parse_aux(data: bytes) -> list[Any]:
    """The arguments in an auxiliary, buffers unarchived (an empty buffer is None).

    Raises DtxError when it is not a primitive dictionary.
    """
    if not data:
        return []
    if len(data) < 16:
        raise DtxError("auxiliary shorter than its header")
    kind, _, length = struct.unpack_from("<IIQ", data)
    if kind & 0xFF != _DICTIONARY or 16 + length > len(data):
        raise DtxError(f"auxiliary of type {kind:#x} and {length} bytes")
    values = list(_primitives(data[16 : 16 + length]))
    # Entries alternate key, value; the keys of positional arguments are null.
    return [_argument(v) for v in values[1::2]]


def _argument(value: Any) -> Any:
    if isinstance(value, bytes):
        return unarchive(value) if value else None
    return value


def _primitives(data: bytes) -> Iterator[Any]:
    offset = 0
    try:
        while offset < len(data):
            (kind,) = struct.unpack_from("<I", data, offset)
            offset += 4
            kind &= 0xFF
            if kind in (_STRING, _BUFFER):
                (size,) = struct.unpack_from("<I", data, offset)
                raw = data[offset + 4 : offset + 4 + size]
                offset += 4 + size
                yield raw.decode("utf-8", "replace") if kind == _STRING else raw
            elif kind == _INT32:
                yield struct.unpack_from("<i", data, offset)[0]
                offset += 4
            elif kind == _INT64:
                yield struct.unpack_from("<q", data, offset)[0]
                offset += 8
            elif kind == _DOUBLE:
                yield struct.unpack_from("<d", data, offset)[0]
                offset += 8
            elif kind == _NULL:
                yield None
            else:
                raise DtxError(f"unknown primitive type {kind:#x}")
    except struct.error as exc:
        raise DtxError(f"truncated auxiliary: {exc}") from exc


# --- NSKeyedArchiver ---------------------------------------------------------------------
def archive(value: Any) -> bytes:
    """``value`` as an NSKeyedArchiver binary plist (root at index 1, as Foundation
    writes it). Raises TypeError for a type DTX does not carry."""
    objects: list[Any] = ["$null"]
    classes: dict[str, plistlib.UID] = {}

    def class_uid(name: str, *supers: str) -> plistlib.UID:
        if name not in classes:
            classes[name] = plistlib.UID(len(objects))
            objects.append({"$classname": name, "$classes": [name, *supers, "NSObject"]})
        return classes[name]

    def add(item: Any) -> plistlib.UID:
        if item is None:
            return plistlib.UID(0)
        uid = plistlib.UID(len(objects))
        if isinstance(item, bool | int | float | str | bytes):
            objects.append(item)  # NSNumber, NSString and NSData sit inline
            return uid
        entry: dict[str, Any] = {}
        objects.append(entry)  # reserve the slot before the children take theirs
        if isinstance(item, dict):
            entry["NS.keys"] = [add(k) for k in item]
            entry["NS.objects"] = [add(v) for v in item.values()]
            entry["$class"] = class_uid("NSDictionary")
        elif isinstance(item, list | tuple):
            entry["NS.objects"] = [add(v) for v in item]
            entry["$class"] = class_uid("NSArray")
        elif isinstance(item, datetime.datetime):
            entry["NS.time"] = (item - _COCOA_EPOCH).total_seconds()
            entry["$class"] = class_uid("NSDate")
        elif isinstance(item, NSError):
            entry.update(NSDomain=add(item.domain), NSCode=item.code,
                         NSUserInfo=add(item.user_info or None))  # fmt: skip
            entry["$class"] = class_uid("NSError")
        else:
            raise TypeError(f"DTX does not archive {type(item).__name__}")
        return uid

    add(value)
    top = {"root": plistlib.UID(1)}
    plist = {"$version": 100000, "$archiver": "NSKeyedArchiver", "$top": top, "$objects": objects}
    return plistlib.dumps(plist, fmt=plistlib.FMT_BINARY, sort_keys=False)


def unarchive(data: bytes) -> Any:
    """The object in an NSKeyedArchiver plist. Classes other than the collections,
    strings, data and dates come back as a dict of their fields plus ``$classname``.

    Raises DtxError when ``data`` is not such an archive.
    """
    try:
        plist = plistlib.loads(data)
        objects: list[Any] = plist["$objects"]
        root = plist["$top"]["root"]
    except Exception as exc:  # plistlib raises several types on bad input
        raise DtxError(f"payload is not an NSKeyedArchiver archive: {exc}") from exc

    def load(item: Any) -> Any:
        if not isinstance(item, plistlib.UID):
            return item
        if item.data == 0:
            return None
        raw = objects[item.data]
        if not isinstance(raw, dict) or "$class" not in raw:
            return raw
        name = objects[raw["$class"].data]["$classname"]
        if name in ("NSDictionary", "NSMutableDictionary"):
            pairs = zip(raw["NS.keys"], raw["NS.objects"], strict=True)
            return {load(k): load(v) for k, v in pairs}
        if name in ("NSArray", "NSMutableArray", "NSSet", "NSMutableSet"):
            return [load(v) for v in raw["NS.objects"]]
        if name in ("NSString", "NSMutableString"):
            return load(raw["NS.string"])
        if name in ("NSData", "NSMutableData"):
            return load(raw["NS.data"])
        if name == "NSDate":
            return _COCOA_EPOCH + datetime.timedelta(seconds=float(raw["NS.time"]))
        if name == "NSNull":
            return None
        fields = {k: load(v) for k, v in raw.items() if k != "$class"}
        return {**fields, "$classname": name}

    try:
        return load(root)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise DtxError(f"malformed archive: {exc!r}") from exc
