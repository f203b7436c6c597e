"""Channels of the Realtime server: who joined what, broadcast, presence, change fan-out.

Everything here runs on the server's event loop. A message meant for many sockets is
encoded once per distinct bytes (serializer version, topic, ids, role's columns) and
written to each socket's transport without awaiting sockets one by one; a socket whose
send buffer grows past :data:`MAX_BUFFERED` is closed instead of slowing the others.
"""

from __future__ import annotations

import json
import logging
import uuid
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from backend_checks.reference.realtime_auth import Rights
from backend_checks.reference.realtime_capture import Change, ChangeFeed, TableInfo
from backend_checks.reference.realtime_filters import Condition, matches
from backend_checks.reference.realtime_protocol import (
    JSON_PAYLOAD,
    VSN_1,
    VSN_2,
    UserBroadcast,
    Vsn,
    compact,
    encode_text,
    encode_user_broadcast,
    websocket_frame,
    websocket_header,
)

__all__ = [
    "MAX_BUFFERED",
    "MAX_RECORD_BYTES",
    "ChannelJoin",
    "Hub",
    "PgSubscription",
    "Principal",
    "Socket",
    "subscription_id",
]

log = logging.getLogger(__name__)

#: Bytes a socket may have queued before it is dropped as too slow.
MAX_BUFFERED: Final = 8 * 1024 * 1024
#: Supabase's default poll_max_record_bytes: larger records carry "Error 413" and only
#: their values of at most 64 bytes.
MAX_RECORD_BYTES: Final = 1024 * 1024


class Socket(Protocol):
    """What the hub needs of a client connection."""

    vsn: Vsn

    def write(self, frame: bytes) -> None:
        """Queue one whole WebSocket frame; never blocks, never raises."""


@dataclass(slots=True)
class Principal:
    """Whom a channel acts for: the JWT's role, subject and claims."""

    role: str
    sub: str
    claims_json: str
    bypass_rls: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """Subscribers are grouped by (role, sub): one RLS check per user per change."""
        return (self.role, self.sub)


@dataclass(eq=False, slots=True)
class PgSubscription:
    """One postgres_changes binding of a channel."""

    id: int
    params: dict[str, Any]
    event: str  # "*", INSERT, UPDATE, DELETE
    schema: str
    table: str | None  # None or "*": every table of the schema
    conditions: tuple[Condition, ...]
    select: tuple[str, ...] | None
    join: ChannelJoin


@dataclass(eq=False, slots=True)
class ChannelJoin:
    """One socket's membership of one topic."""

    socket: Socket
    topic: str
    join_ref: str | None
    principal: Principal
    broadcast_self: bool = False
    broadcast_ack: bool = False
    presence_key: str = ""
    presence_enabled: bool = False
    subscriptions: list[PgSubscription] = field(default_factory=list)
    live: bool = False  # postgres_changes flow only after "Subscribed to PostgreSQL"
    # A private channel's rights (realtime_auth); None on a public one, where all may.
    rights: Rights | None = None
    # Ids of the database broadcasts replayed at the join: not sent again when they come.
    replayed: frozenset[str] = frozenset()
    _change_frame: tuple[bytes, bytes] | None = None

    @property
    def channel(self) -> str:
        """The hub's name of the join's channel: a private channel and a public one of
        the same topic are apart, as Supabase keeps them."""
        return self.topic if self.rights is None else f"private:{self.topic}"

    @property
    def hears_broadcast(self) -> bool:
        return self.rights is None or self.rights.broadcast_read

    @property
    def sees_presence(self) -> bool:
        return self.rights is None or self.rights.presence_read

    def change_frame_parts(self) -> tuple[bytes, bytes]:
        """The bytes around a postgres_changes payload for this join (topic and serializer
        fixed), made once: fan-out then only joins shared payload bytes to them."""
        if self._change_frame is None:
            head, _, tail = encode_text(
                self.socket.vsn, self.topic, "postgres_changes", "\0"
            ).partition("\0")
            self._change_frame = (head.encode(), tail.encode())
        return self._change_frame

    def push(self, event: str, payload: Any, ref: str | None = None) -> None:
        """Send one channel message (join_ref set, as Phoenix pushes from a channel)."""
        text = encode_text(self.socket.vsn, self.topic, event, compact(payload), ref, self.join_ref)
        self.socket.write(websocket_frame(text))

    def reply(self, ref: str | None, status: str, response: dict[str, Any]) -> None:
        """Answer a push of this channel with phx_reply."""
        self.push("phx_reply", {"status": status, "response": response}, ref)


def subscription_id(params: dict[str, Any]) -> int:
    """A stable integer id of a binding's params (Supabase uses :erlang.phash2, 27 bits)."""
    return zlib.crc32(json.dumps(params, sort_keys=True).encode()) & 0x7FFFFFF


class Hub:
    """All channel joins of one server, and the fan-out of broadcasts and changes."""

    def __init__(self, feed: ChangeFeed | None) -> None:
        self.feed = feed
        self.topics: dict[str, set[ChannelJoin]] = defaultdict(set)
        self.by_table: dict[tuple[str, str], set[PgSubscription]] = defaultdict(set)
        self.by_schema: dict[str, set[PgSubscription]] = defaultdict(set)
        # topic -> presence key -> [(join, meta)]
        self.presence: dict[str, dict[str, list[tuple[ChannelJoin, dict[str, Any]]]]] = defaultdict(
            dict
        )
        self.delivered = 0

    # -- membership -----------------------------------------------------------------
    def add(self, join: ChannelJoin) -> None:
        """Register a join for broadcast and presence (postgres bindings come later)."""
        self.topics[join.channel].add(join)

    def add_subscriptions(self, join: ChannelJoin) -> None:
        """Index the join's postgres_changes bindings; they flow once ``join.live``."""
        for sub in join.subscriptions:
            if sub.table in (None, "*"):
                self.by_schema[sub.schema].add(sub)
            else:
                self.by_table[(sub.schema, sub.table)].add(sub)

    def remove(self, join: ChannelJoin) -> None:
        """Forget a join: its bindings, its topic membership and its presences."""
        join.live = False
        for sub in join.subscriptions:
            self.by_schema.get(sub.schema, set()).discard(sub)
            if sub.table is not None:
                self.by_table.get((sub.schema, sub.table), set()).discard(sub)
        members = self.topics.get(join.channel)
        if members is not None:
            members.discard(join)
            if not members:
                del self.topics[join.channel]
        self._untrack(join)

    # -- broadcast --------------------------------------------------------------------
    def broadcast(
        self,
        topic: str,
        payload: dict[str, Any],
        sender: ChannelJoin | None,
        *,
        message_id: str | None = None,
    ) -> int:
        """Deliver a JSON broadcast to channel ``topic`` (a join's ``channel``; to the sender
        only with ``self``; not to a join that had database message ``message_id`` replayed).

        Returns how many sockets it was written to.
        """
        body = compact(payload)
        frames: dict[Vsn, bytes] = {}
        audience = self._audience(topic, sender)
        if message_id is not None:
            audience = [j for j in audience if message_id not in j.replayed]
        for join in audience:
            vsn = join.socket.vsn
            if vsn not in frames:
                frames[vsn] = websocket_frame(encode_text(vsn, join.topic, "broadcast", body))
            join.socket.write(frames[vsn])
        return len(audience)

    def broadcast_binary(
        self, topic: str, message: UserBroadcast, sender: ChannelJoin | None
    ) -> None:
        """Deliver a 2.0.0 binary broadcast to ``topic``: as bytes to 2.0.0 sockets, as
        JSON to 1.0.0 (to the sender only with ``self``).

        Binary user payloads cannot reach 1.0.0 sockets (Supabase drops them too).
        """
        v2 = websocket_frame(encode_user_broadcast(message))
        v1: bytes | None = None
        if message.encoding == JSON_PAYLOAD:
            try:  # re-encoded, so a malformed payload never reaches 1.0.0 clients raw
                user = json.loads(message.payload or b"{}")
            except ValueError:
                user = None
            if user is not None:
                body = compact({"type": "broadcast", "event": message.event, "payload": user})
                v1 = websocket_frame(encode_text(VSN_1, message.topic, "broadcast", body))
        for join in self._audience(topic, sender):
            if join.socket.vsn == VSN_2:
                join.socket.write(v2)
            elif v1 is not None:
                join.socket.write(v1)

    def _audience(self, topic: str, sender: ChannelJoin | None) -> list[ChannelJoin]:
        members = self.topics.get(topic, set())
        return [
            j
            for j in members
            if j.hears_broadcast and (j is not sender or (sender and sender.broadcast_self))
        ]

    # -- presence ---------------------------------------------------------------------
    def presence_state(self, join: ChannelJoin) -> None:
        """Send the topic's whole presence state to one join."""
        state = {
            key: {"metas": [meta for _, meta in entries]}
            for key, entries in self.presence.get(join.channel, {}).items()
        }
        if join.sees_presence:
            join.push("presence_state", state)

    def track(self, join: ChannelJoin, payload: dict[str, Any]) -> None:
        """Track (or re-track) the join's presence and tell the topic with presence_diff."""
        key = join.presence_key or str(uuid.uuid4())
        join.presence_key = key
        entries = self.presence[join.channel].setdefault(key, [])
        old = [meta for owner, meta in entries if owner is join]
        meta = {**payload, "phx_ref": uuid.uuid4().hex[:20]}
        if old:
            meta["phx_ref_prev"] = old[0]["phx_ref"]
        entries[:] = [(owner, m) for owner, m in entries if owner is not join]
        entries.append((join, meta))
        leaves = {key: {"metas": old}} if old else {}
        self._presence_diff(join.channel, {key: {"metas": [meta]}}, leaves)

    def untrack(self, join: ChannelJoin) -> None:
        """Stop tracking the join's presence (a no-op when it tracks nothing)."""
        self._untrack(join)

    def _untrack(self, join: ChannelJoin) -> None:
        topic_state = self.presence.get(join.channel)
        if not topic_state or join.presence_key not in topic_state:
            return
        entries = topic_state[join.presence_key]
        left = [meta for owner, meta in entries if owner is join]
        entries[:] = [(owner, m) for owner, m in entries if owner is not join]
        if not entries:
            del topic_state[join.presence_key]
        if not topic_state:
            del self.presence[join.channel]
        if left:
            self._presence_diff(join.channel, {}, {join.presence_key: {"metas": left}})

    def _presence_diff(self, topic: str, joins: dict[str, Any], leaves: dict[str, Any]) -> None:
        body = compact({"joins": joins, "leaves": leaves})
        frames: dict[Vsn, bytes] = {}
        for member in self.topics.get(topic, set()):
            if not member.sees_presence:
                continue
            vsn = member.socket.vsn
            if vsn not in frames:  # every member of a channel has the same topic
                frames[vsn] = websocket_frame(encode_text(vsn, member.topic, "presence_diff", body))
            member.socket.write(frames[vsn])

    # -- postgres_changes -------------------------------------------------------------
    def database_broadcast(self, change: Change) -> int:
        """A row inserted into realtime.messages (``realtime.send``, broadcast from the
        database): its payload goes to the channel of its topic, the private one when the
        row is private, as Supabase's Realtime sends it (``meta.id``: the row's id). Rows
        of other extensions, or without an event or payload, are not broadcasts. Returns
        how many sockets it was written to."""
        row = change.record or {}
        topic, event, payload = row.get("topic"), row.get("event"), row.get("payload")
        if row.get("extension") != "broadcast" or not topic or not event or payload is None:
            return 0
        channel = f"realtime:{topic}"
        if row.get("private"):
            channel = f"private:{channel}"
        message = {"type": "broadcast", "event": event, "payload": payload}
        message_id = row.get("id")
        if message_id:
            message["meta"] = {"id": message_id}
        return self.broadcast(channel, message, None, message_id=message_id or None)

    async def dispatch(self, change: Change) -> int:
        """Fan one change out to every live binding allowed to see it; returns deliveries.
        An insert into realtime.messages is also a broadcast (:meth:`database_broadcast`)."""
        assert self.feed is not None
        if (change.schema, change.table, change.type) == ("realtime", "messages", "INSERT"):
            self.database_broadcast(change)
        candidates = self.by_table.get((change.schema, change.table), set()) | self.by_schema.get(
            change.schema, set()
        )
        if not candidates:
            return 0
        table = await self.feed.table(change.schema, change.table)
        if table is None:
            return 0
        row = (change.record if change.type != "DELETE" else change.old_record) or {}
        # Columns changed, or the table was rebuilt under its name (a new oid: its
        # visibility function and privileges are the new table's): read it again.
        rebuilt = change.relid is not None and change.relid != table.oid
        if rebuilt or any(col not in table.column_types for col in row):
            self.feed.forget(change.schema, change.table)
            table = await self.feed.table(change.schema, change.table)
            if table is None:
                return 0
        if change.type == "DELETE":
            # Filters see the old record as it is sent (the replica identity; with RLS
            # only the key): a filter on another column must not tell a subscriber
            # anything of a deleted row it may not read.
            keep = _identity(table, change.type)
            row = {k: v for k, v in row.items() if k in keep}
        passes: dict[tuple[Condition, ...], bool] = {}  # each distinct filter once
        matched = []
        for sub in candidates:
            if not sub.join.live or sub.event not in ("*", change.type):
                continue
            ok = passes.get(sub.conditions)
            if ok is None:
                ok = passes[sub.conditions] = matches(sub.conditions, row, table.column_types)
            if ok:
                matched.append(sub)
        if not matched:
            return 0
        allowed = await self._allowed(table, change, row, matched)
        return await self._deliver(
            table, change, [s for s in matched if allowed[s.join.principal.key]]
        )

    async def _allowed(
        self, table: TableInfo, change: Change, row: dict[str, Any], subs: list[PgSubscription]
    ) -> dict[tuple[str, str], bool]:
        """Per (role, sub): may that user see this change? One RLS round trip in all."""
        assert self.feed is not None
        verdict: dict[tuple[str, str], bool] = {}
        to_check: dict[tuple[str, str], Principal] = {}
        for sub in subs:
            principal = sub.join.principal
            if principal.key in verdict or principal.key in to_check:
                continue
            columns = await self.feed.selectable(principal.role, table)
            if not table.primary_key or not set(table.primary_key) <= columns:
                verdict[principal.key] = False  # Supabase: Error 400/401, no data
            elif principal.bypass_rls or not table.rls_enabled or change.type == "DELETE":
                # Deleted rows cannot be looked up; with RLS on they carry only the
                # primary key (as Supabase does), see _data().
                verdict[principal.key] = True
            else:
                to_check[principal.key] = principal
        if to_check:
            order = list(to_check.values())
            answers = await self.feed.visible(table, row, [(p.role, p.claims_json) for p in order])
            for principal, seen in zip(order, answers, strict=True):
                verdict[principal.key] = seen
        return verdict

    async def _deliver(self, table: TableInfo, change: Change, subs: list[PgSubscription]) -> int:
        assert self.feed is not None
        per_join: dict[ChannelJoin, list[PgSubscription]] = defaultdict(list)
        for sub in subs:
            per_join[sub.join].append(sub)
        data_cache: dict[tuple[str, tuple[str, ...] | None], bytes] = {}
        body_cache: dict[tuple[Any, ...], bytes] = {}
        frame_cache: dict[tuple[bytes, bytes], bytes] = {}
        for join, join_subs in per_join.items():
            role = join.principal.role
            ids: tuple[int, ...]
            if len(join_subs) == 1:
                select, ids = join_subs[0].select, (join_subs[0].id,)
            else:
                selects = {s.select for s in join_subs}
                select = selects.pop() if len(selects) == 1 else None
                ids = tuple(sorted({s.id for s in join_subs}))
            data_key = (role, select)
            data = data_cache.get(data_key)
            if data is None:
                columns = await self.feed.selectable(role, table)
                data = data_cache[data_key] = compact(
                    _data(table, change, columns, select)
                ).encode()
            body_key = (ids, data_key)
            body = body_cache.get(body_key)
            if body is None:
                body = body_cache[body_key] = b'{"ids":%s,"data":%s}' % (
                    compact(list(ids)).encode(),
                    data,
                )
            head, tail = join.change_frame_parts()
            frame = frame_cache.get((head, body))
            if frame is None:
                payload = b"".join((head, body, tail))
                frame = frame_cache[(head, body)] = websocket_header(len(payload)) + payload
            join.socket.write(frame)
        self.delivered += len(per_join)
        return len(per_join)


def _data(
    table: TableInfo, change: Change, columns: frozenset[str], select: tuple[str, ...] | None
) -> dict[str, Any]:
    """The ``data`` of a postgres_changes payload as walrus builds it for one role."""
    shown = columns if select is None else columns & set(select)
    data: dict[str, Any] = {
        "schema": change.schema,
        "table": change.table,
        "commit_timestamp": change.commit_timestamp,
        "type": change.type,
        "columns": [{"name": n, "type": t} for n, t in table.columns if n in shown],
        "errors": None,
    }
    too_big = change.size > MAX_RECORD_BYTES

    def trim(values: dict[str, Any] | None, keep: set[str] | frozenset[str]) -> dict[str, Any]:
        out = {k: v for k, v in (values or {}).items() if k in keep}
        if too_big:  # walrus keeps only values of at most 64 bytes
            out = {k: v for k, v in out.items() if len(json.dumps(v)) <= 64}
        return out

    if change.type in ("INSERT", "UPDATE"):
        data["record"] = trim(change.record, shown)
    if change.type in ("UPDATE", "DELETE"):
        data["old_record"] = trim(change.old_record, shown & _identity(table, change.type))
    if too_big:
        data["errors"] = ["Error 413: Payload Too Large"]
    return data


def _identity(table: TableInfo, change_type: str) -> set[str]:
    """The columns an UPDATE's or DELETE's old record carries, as walrus has them: the
    primary key, or every column with ``REPLICA IDENTITY FULL``, but only the key for a
    DELETE on an RLS table (no RLS check can run on a deleted row)."""
    if table.replica_identity_full and not (change_type == "DELETE" and table.rls_enabled):
        return {n for n, _ in table.columns}
    return set(table.primary_key)
