"""Pure parts of Realtime: the filter language and the wire serializers."""

from __future__ import annotations

import contextlib
import importlib
import json
from importlib import resources
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend_checks.reference.realtime_auth import Rights
from backend_checks.reference.realtime_capture import Change
from backend_checks.reference.realtime_channels import ChannelJoin, Hub, Principal
from backend_checks.reference.realtime_filters import FilterError, matches, parse_filter
from backend_checks.reference.realtime_protocol import (
    JSON_PAYLOAD,
    VSN_1,
    VSN_2,
    ProtocolError,
    UserBroadcast,
    decode_binary,
    decode_text,
    encode_text,
    encode_user_broadcast,
    websocket_frame,
)

TYPES = {"id": "int8", "name": "text", "owner": "uuid", "at": "timestamptz", "ok": "bool"}
ROW = {"id": 5, "name": "a,b", "owner": "ABCDEF00-0000-4000-8000-000000000001",
       "at": "2026-01-01T10:00:00+00:00", "ok": True}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id=eq.5", True),
        ("id=neq.5", False),
        ("id=gt.4,id=lt.6", True),
        ("id=gte.6", False),
        ("id=in.(1,5,9)", True),
        ("id=not.in.(1,5,9)", False),
        ('name=eq."a,b"', True),
        ("name=eq.a\\,b", True),
        ("name=like.a%", True),
        ("name=ilike.A%", True),
        ("owner=eq.abcdef00-0000-4000-8000-000000000001", True),
        ("owner=in.(00000000000040008000000000000000,ABCDEF00000040008000000000000001)", True),
        ("at=gt.2026-01-01T09:59:59Z", True),
        ("at=lt.2026-01-01T11:00:00+01:00", False),
        ("ok=is.true", True),
        ("name=is.null", False),
        ("name=not.is.null", True),
    ],
)
def test_filters_compare_as_the_column_type(text: str, expected: bool) -> None:
    assert matches(parse_filter(text, TYPES), ROW, TYPES) is expected


def test_null_never_matches_a_comparison() -> None:
    conds = parse_filter("name=neq.x", TYPES)
    assert matches(conds, {**ROW, "name": None}, TYPES) is False


@pytest.mark.parametrize(
    "text",
    ["nope=eq.1", "id=eq", "id=between.1", "id=in.1,2", "id=eq.abc", "ok=is.maybe",
     "owner=eq.notauuid", "owner=in.(x,y)", "owner=neq.abcdef00-0000", "id=eq.1.5",
     "at=gt.yesterday"],
)  # fmt: skip
def test_bad_filters_are_refused(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text, TYPES)


def test_serializers_round_trip() -> None:
    v1 = json.loads(encode_text(VSN_1, "realtime:x", "phx_reply", '{"a":1}', "3", "1"))
    assert v1 == {"topic": "realtime:x", "event": "phx_reply", "payload": {"a": 1},
                  "ref": "3", "join_ref": "1"}  # fmt: skip
    assert json.loads(encode_text(VSN_2, "t", "e", "{}", None, "1")) == ["1", None, "t", "e", {}]
    frame = decode_text(VSN_2, '["1","2","realtime:x","phx_join",{"config":{}}]')
    assert (frame.join_ref, frame.ref, frame.topic, frame.event) == (
        "1",
        "2",
        "realtime:x",
        "phx_join",
    )


def test_binary_broadcast_push_becomes_a_user_broadcast() -> None:
    # A userBroadcastPush as realtime-js 2.x encodes it (kind 3, JSON payload).
    join_ref, ref, topic, event, body = b"1", b"7", b"realtime:r", b"ping", b'{"n":1}'
    push = bytes([3, len(join_ref), len(ref), len(topic), len(event), 0, JSON_PAYLOAD])
    push += join_ref + ref + topic + event + body
    message = decode_binary(push)
    assert (message.topic, message.event, message.ref, message.payload) == (
        "realtime:r", "ping", "7", b'{"n":1}')  # fmt: skip
    out = encode_user_broadcast(UserBroadcast("realtime:r", "ping", body, JSON_PAYLOAD))
    assert out[0] == 4 and out.endswith(body)


def test_websocket_frame_lengths() -> None:
    assert websocket_frame("hi")[:2] == b"\x81\x02"
    assert websocket_frame("x" * 300)[:4] == b"\x81\x7e\x01\x2c"
    assert websocket_frame(b"\x00" * 70000)[:2] == b"\x82\x7f"


@pytest.mark.parametrize(
    "name",
    [
        "backend_checks.reference.realtime",
        "backend_checks.reference.realtime_auth",
        "backend_checks.reference.realtime_capture",
        "backend_checks.reference.realtime_channels",
        "backend_checks.reference.realtime_client",
        "backend_checks.reference.realtime_filters",
        "backend_checks.reference.realtime_protocol",
        "backend_checks.reference.realtime_socket",
        "backend_checks.realtime_checks",
        "backend_checks.storage_checks",
    ],
)
def test_public_surface_is_explicit(name: str) -> None:
    module = importlib.import_module(name)
    assert len(set(module.__all__)) == len(module.__all__)
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"


def test_capture_sql_ships_with_the_package() -> None:
    sql = resources.files("backend_checks.reference").joinpath("sql/realtime.sql").read_text()
    assert "devicelab_realtime.capture" in sql and "pg_notify" in sql


@given(text=st.text(max_size=60), value=st.one_of(st.none(), st.integers(), st.text(max_size=10)))
@settings(max_examples=200, deadline=None)
def test_any_filter_text_is_refused_or_evaluated_never_crashes(text: str, value: Any) -> None:
    try:
        conds = parse_filter(text, TYPES)
    except FilterError:
        return
    for column in TYPES:
        assert matches(conds, {**ROW, column: value}, TYPES) in (True, False)


@given(data=st.binary(max_size=80))
def test_any_binary_frame_is_refused_or_decoded(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_binary(data)


def test_inserts_cut_short_leave_no_unretrieved_task_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ctrl-C during backend check's realtime phase stops the server: the inserts still in
    # flight fail, and each printed "Task exception was never retrieved" with a traceback.
    import asyncio
    import gc

    import aiohttp

    from backend_checks import realtime_checks as rc

    async def failing_insert(*_args: Any) -> None:
        await asyncio.sleep(0.05)
        raise aiohttp.ServerDisconnectedError()

    monkeypatch.setattr(rc, "_insert", failing_insert)
    unretrieved: list[str] = []

    async def drive() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: unretrieved.append(ctx["message"]))
        load = rc.RealtimeLoad(inserts=20, rate_per_s=100, cold_inserts=0)
        args = (None, None, None, load, rc._Deliveries("t"), 1)
        driving = asyncio.create_task(rc._drive_inserts(*args))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)  # half of the inserts are in flight
        driving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driving
        await asyncio.sleep(0.2)  # what was in flight ends meanwhile
        gc.collect()

    asyncio.run(drive())
    assert unretrieved == []


class _Socket:
    """A client socket that keeps what it is sent."""

    vsn = VSN_1

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, frame: bytes) -> None:
        self.sent.append(frame)


def test_a_database_broadcast_goes_to_its_channel_once() -> None:
    """realtime.messages rows: private ones to the private channel only, public ones to
    the public channel only, and not to a join that had the row replayed already."""
    hub = Hub(None)
    who = Principal(role="authenticated", sub="u1", claims_json="{}")
    joins = {
        name: ChannelJoin(socket=_Socket(), topic="realtime:news", join_ref="1", principal=who,
                          rights=rights, replayed=replayed)
        for name, rights, replayed in (
            ("public", None, frozenset()),
            ("private", Rights(broadcast_read=True), frozenset()),
            ("replayed", Rights(broadcast_read=True), frozenset({"m1"})),
            ("presence only", Rights(presence_read=True), frozenset()),
        )
    }  # fmt: skip
    for join in joins.values():
        hub.add(join)

    def row(message_id: str, private: bool) -> Change:
        record = {"id": message_id, "topic": "news", "event": "say", "extension": "broadcast",
                  "payload": {"n": message_id}, "private": private}  # fmt: skip
        return Change("realtime", "messages", "INSERT", "", record, None, 0)

    assert hub.database_broadcast(row("m1", private=True)) == 1
    assert hub.database_broadcast(row("m2", private=True)) == 2
    assert hub.database_broadcast(row("m3", private=False)) == 1
    heard = {name: [json.loads(websocket_payload(f))["payload"]["payload"]["n"]
                    for f in cast(_Socket, join.socket).sent]
             for name, join in joins.items()}  # fmt: skip
    assert heard == {"public": ["m3"], "private": ["m1", "m2"], "replayed": ["m2"],
                     "presence only": []}  # fmt: skip


def websocket_payload(frame: bytes) -> str:
    """The text of one unmasked server frame (as websocket_frame makes them)."""
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    return frame[start:].decode()
