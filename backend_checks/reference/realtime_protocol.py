"""The Phoenix wire protocol of Supabase Realtime, both serializer versions.

realtime-js 2.x defaults to ``vsn=2.0.0`` (supabase-js 2.109 does), realtime-py and older
clients use ``vsn=1.0.0``; a reference server must speak both:

- 1.0.0: every frame is a JSON object ``{topic, event, payload, ref, join_ref}``.
- 2.0.0: text frames are JSON arrays ``[join_ref, ref, topic, event, payload]``; a
  client's ``broadcast`` push with a user event is a binary frame of kind 3
  (userBroadcastPush) and the server delivers it as a binary frame of kind 4
  (userBroadcast). Layouts follow realtime-js ``src/lib/serializer.ts``.

Server messages that go to many sockets are encoded once (:func:`encode_text`) and framed
once (:func:`websocket_frame`).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "BINARY_PAYLOAD",
    "JSON_PAYLOAD",
    "VSN_1",
    "VSN_2",
    "Frame",
    "ProtocolError",
    "UserBroadcast",
    "Vsn",
    "compact",
    "decode_binary",
    "decode_text",
    "encode_text",
    "encode_user_broadcast",
    "websocket_frame",
    "websocket_header",
]

Vsn = Literal["1.0.0", "2.0.0"]
VSN_1: Final[Vsn] = "1.0.0"
VSN_2: Final[Vsn] = "2.0.0"

#: Payload encodings of the binary broadcast frames (realtime-js Serializer).
BINARY_PAYLOAD: Final = 0
JSON_PAYLOAD: Final = 1
_KIND_USER_BROADCAST_PUSH: Final = 3
_KIND_USER_BROADCAST: Final = 4

_OPCODE_TEXT: Final = 0x1
_OPCODE_BINARY: Final = 0x2


def compact(value: Any) -> str:
    """JSON without spaces, as Phoenix's Jason writes it (and fewer bytes per frame)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class ProtocolError(ValueError):
    """A frame that is not valid Phoenix protocol (the connection answers, never crashes)."""


@dataclass(slots=True)
class Frame:
    """One Phoenix message: a push from a client or a message from the server."""

    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None


@dataclass(slots=True)
class UserBroadcast:
    """A broadcast whose user payload travels as bytes (vsn 2.0.0 binary frames).

    ``encoding`` is :data:`JSON_PAYLOAD` (``payload`` holds JSON text) or
    :data:`BINARY_PAYLOAD` (opaque bytes that a 1.0.0 client cannot receive).
    """

    topic: str
    event: str
    payload: bytes
    encoding: int
    metadata: str = ""
    ref: str | None = None
    join_ref: str | None = None


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int):
        return str(value)
    raise ProtocolError(f"ref must be a string, got {type(value).__name__}")


def decode_text(vsn: Vsn, text: str) -> Frame:
    """Parse one text frame of a client. Raises ProtocolError when it is not a message."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if vsn == VSN_2:
        if not isinstance(data, list) or len(data) != 5:
            raise ProtocolError("a 2.0.0 frame is a JSON array of 5 items")
        join_ref, ref, topic, event, payload = data
    else:
        if not isinstance(data, dict):
            raise ProtocolError("a 1.0.0 frame is a JSON object")
        join_ref, ref = data.get("join_ref"), data.get("ref")
        topic, event, payload = data.get("topic"), data.get("event"), data.get("payload")
    if not isinstance(topic, str) or not isinstance(event, str):
        raise ProtocolError("topic and event must be strings")
    return Frame(topic, event, payload, _opt_str(ref), _opt_str(join_ref))


def decode_binary(data: bytes) -> UserBroadcast:
    """Parse a binary userBroadcastPush frame (kind 3). Raises ProtocolError otherwise."""
    if len(data) < 7 or data[0] != _KIND_USER_BROADCAST_PUSH:
        raise ProtocolError("only userBroadcastPush binary frames are accepted")
    sizes = data[1:6]
    encoding = data[6]
    offset = 7
    fields: list[str] = []
    try:
        for size in sizes:
            fields.append(data[offset : offset + size].decode())
            offset += size
    except UnicodeDecodeError as exc:
        raise ProtocolError("binary frame header is not UTF-8") from exc
    if offset > len(data):
        raise ProtocolError("binary frame is shorter than its header says")
    join_ref, ref, topic, event, metadata = fields
    return UserBroadcast(
        topic=topic,
        event=event,
        payload=bytes(data[offset:]),
        encoding=encoding,
        metadata=metadata,
        ref=ref or None,
        join_ref=join_ref or None,
    )


def encode_text(
    vsn: Vsn,
    topic: str,
    event: str,
    payload_json: str,
    ref: str | None = None,
    join_ref: str | None = None,
) -> str:
    """A server text frame whose payload is already JSON text (so it is encoded once)."""
    head = compact
    if vsn == VSN_2:
        return f"[{head(join_ref)},{head(ref)},{head(topic)},{head(event)},{payload_json}]"
    return (
        f'{{"topic":{head(topic)},"event":{head(event)},"payload":{payload_json},'
        f'"ref":{head(ref)},"join_ref":{head(join_ref)}}}'
    )


def encode_user_broadcast(message: UserBroadcast) -> bytes:
    """The binary userBroadcast frame (kind 4) that delivers ``message`` to 2.0.0 clients.

    Raises ProtocolError when a header field is longer than 255 bytes.
    """
    topic, event, meta = message.topic.encode(), message.event.encode(), message.metadata.encode()
    if max(len(topic), len(event), len(meta)) > 255:
        raise ProtocolError("topic, event and metadata must each fit in 255 bytes")
    header = bytes([_KIND_USER_BROADCAST, len(topic), len(event), len(meta), message.encoding])
    return header + topic + event + meta + message.payload


def websocket_frame(data: str | bytes) -> bytes:
    """One unmasked, uncompressed server WebSocket frame (RFC 6455) carrying ``data``.

    Built once per distinct message and written to every socket's transport as is.
    """
    if isinstance(data, str):
        body = data.encode()
        return websocket_header(len(body)) + body
    return websocket_header(len(data), _OPCODE_BINARY) + data


def websocket_header(length: int, opcode: int = _OPCODE_TEXT) -> bytes:
    """The header of a final, unmasked server frame of ``length`` payload bytes."""
    first = 0x80 | opcode
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)
