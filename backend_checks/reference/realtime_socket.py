"""One Realtime client socket: Phoenix frames in, channel joins, raw frame writes out.

:class:`Connection` is made by ``RealtimeService.websocket`` per upgraded socket and lives
until the client leaves, goes silent for ``IDLE_TIMEOUT_S`` or the server stops. Pushes it
handles: ``heartbeat`` (topic ``phoenix``), ``phx_join``, ``phx_leave``, ``broadcast``
(JSON, or binary with vsn 2.0.0), ``presence`` and ``access_token``. Every write goes
straight to the transport as a whole frame, so control replies and fan-out frames keep
their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Final, TypeGuard, cast

import psycopg
from aiohttp import WSCloseCode, WSMsgType, web

from backend_checks.reference.context import AuthRejected
from backend_checks.reference.realtime_auth import PolicyError, Rights
from backend_checks.reference.realtime_capture import TableInfo
from backend_checks.reference.realtime_channels import (
    MAX_BUFFERED,
    ChannelJoin,
    PgSubscription,
    Principal,
    subscription_id,
)
from backend_checks.reference.realtime_filters import Condition, FilterError, parse_filter
from backend_checks.reference.realtime_protocol import (
    VSN_2,
    Frame,
    ProtocolError,
    UserBroadcast,
    Vsn,
    compact,
    decode_binary,
    decode_text,
    encode_text,
    websocket_frame,
)

if TYPE_CHECKING:
    from backend_checks.reference.realtime import RealtimeService

__all__ = ["IDLE_TIMEOUT_S", "Connection", "principal_of"]

log = logging.getLogger(__name__)

#: Phoenix closes a socket that sent nothing (not even a heartbeat) for this long.
IDLE_TIMEOUT_S: Final = 60.0
_EVENTS: Final = frozenset({"*", "INSERT", "UPDATE", "DELETE"})
_LONGEST_TIMER_S: Final = 30 * 24 * 3600.0


class Connection:
    """One client socket: its serializer version, its joins, and its raw write path."""

    def __init__(
        self,
        service: RealtimeService,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        vsn: Vsn,
        apikey: str,
    ) -> None:
        self.service = service
        self.ws = ws
        # uvloop's transports are not asyncio.WriteTransport subclasses: duck-type them.
        self.transport = cast("asyncio.WriteTransport | None", transport)
        self.vsn: Vsn = vsn
        self.apikey = apikey
        self.joins: dict[str, ChannelJoin] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    # -- writing ------------------------------------------------------------------------
    def write(self, frame: bytes) -> None:
        """Write one whole frame to the transport; a too slow socket is dropped instead."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if (unsent := transport.get_write_buffer_size()) > MAX_BUFFERED:
            log.warning(
                "realtime: dropping a socket with %d bytes unsent (more than %d)",
                unsent,
                MAX_BUFFERED,
            )
            transport.abort()
            return
        transport.write(frame)

    def send(
        self, topic: str, event: str, payload: Any, ref: str | None, join_ref: str | None
    ) -> None:
        """Encode and write one message."""
        text = encode_text(self.vsn, topic, event, compact(payload), ref, join_ref)
        self.write(websocket_frame(text))

    async def close(self, *, going_away: bool = False) -> None:
        """Close the socket (1001 "going away" when the server stops; never raises)."""
        code = WSCloseCode.GOING_AWAY if going_away else WSCloseCode.OK
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=b"server stopping" if going_away else b"")

    # -- reading ------------------------------------------------------------------------
    async def serve(self) -> None:
        """Read frames until the client leaves, goes idle too long or breaks the protocol."""
        while True:
            try:
                msg = await self.ws.receive()
            except TimeoutError:
                await self.ws.close(message=b"heartbeat timeout")
                return
            if msg.type == WSMsgType.TEXT:
                try:
                    frame = decode_text(self.vsn, msg.data)
                except ProtocolError as exc:
                    log.info("realtime: bad frame: %s", exc)
                    continue
                try:
                    await self.handle(frame)
                except Exception:  # one bad push must not end the client's socket
                    log.exception("realtime: failed to handle %s on %s", frame.event, frame.topic)
            elif msg.type == WSMsgType.BINARY and self.vsn == VSN_2:
                try:
                    await self.handle_binary(decode_binary(msg.data))
                except ProtocolError as exc:
                    log.info("realtime: bad binary frame: %s", exc)
            elif msg.type in (
                WSMsgType.CLOSE,
                WSMsgType.CLOSING,
                WSMsgType.CLOSED,
                WSMsgType.ERROR,
            ):
                return

    async def handle(self, frame: Frame) -> None:
        """Dispatch one client push."""
        if frame.topic == "phoenix":
            if frame.event == "heartbeat":
                self.send("phoenix", "phx_reply", {"status": "ok", "response": {}}, frame.ref, None)
            return
        if frame.event == "phx_join":
            await self.join(frame)
            return
        join = self.joins.get(frame.topic)
        if join is None:
            reply = {"status": "error", "response": {"reason": "unmatched topic"}}
            self.send(frame.topic, "phx_reply", reply, frame.ref, frame.join_ref)
            return
        payload = _mapping(frame.payload)
        if frame.event == "phx_leave":
            join.reply(frame.ref, "ok", {})
            self.drop(frame.topic)
        elif frame.event == "broadcast":
            if not await self.may_write(join, "broadcast"):
                return  # dropped without a word, ack or not (as Supabase does)
            self.service.hub.broadcast(join.channel, payload, join)
            if join.broadcast_ack:
                join.reply(frame.ref, "ok", {})
        elif frame.event == "presence":
            await self.presence(join, frame, payload)
        elif frame.event == "access_token":
            await self.refresh_token(join, payload.get("access_token"))

    async def handle_binary(self, message: UserBroadcast) -> None:
        """A 2.0.0 binary broadcast push."""
        join = self.joins.get(message.topic)
        if join is None or not await self.may_write(join, "broadcast"):
            return
        self.service.hub.broadcast_binary(join.channel, message, join)
        if join.broadcast_ack:
            join.reply(message.ref, "ok", {})

    # -- channels -----------------------------------------------------------------------
    async def join(self, frame: Frame) -> None:
        """phx_join: check the token, register the join, reply, then set up bindings."""
        topic = frame.topic
        payload = _mapping(frame.payload)
        config = _mapping(payload.get("config"))

        def refuse(reason: str) -> None:
            reply = {"status": "error", "response": {"reason": reason}}
            self.send(topic, "phx_reply", reply, frame.ref, frame.join_ref)

        admitted = await self._admit(topic, payload, config)
        if isinstance(admitted, str):
            refuse(admitted)
            return
        claims, principal, rights, replay = admitted
        broadcast = _mapping(config.get("broadcast"))
        if topic in self.joins:  # Phoenix closes the old join of the same topic
            old = self.joins[topic]
            self.send(topic, "phx_close", {}, old.join_ref, old.join_ref)
            self.drop(topic)
        presence = _mapping(config.get("presence"))
        join = ChannelJoin(
            socket=self,
            topic=topic,
            join_ref=frame.join_ref or frame.ref,
            principal=principal,
            broadcast_self=bool(broadcast.get("self")),
            broadcast_ack=bool(broadcast.get("ack")),
            presence_key=str(presence.get("key") or ""),
            presence_enabled=bool(presence.get("enabled")),
            rights=rights,
            replayed=frozenset(message_id for message_id, _, _ in replay),
        )
        params = [p for p in (config.get("postgres_changes") or []) if isinstance(p, dict)]
        bindings = [{**p, "id": subscription_id(p)} for p in params]
        self.joins[topic] = join
        self.service.hub.add(join)
        self._schedule_expiry(join, claims)
        # Supabase replies first and subscribes afterwards, so a client that writes as soon
        # as its SUBSCRIBED callback fires can miss its first change. Here the bindings are
        # made live before the reply (a few ms, cached after the first join of a table),
        # and reply, system message and `live` follow with no await between them: no
        # change can come before the reply, none committed after it is missed.
        problem = await self._prepare(join, bindings) if bindings else None
        if self.joins.get(topic) is not join:
            return  # replaced or dropped meanwhile
        if problem is not None and _mapping(config.get("postgres_changes_options")).get("wait"):
            # realtime-js's postgres_changes_options.wait: the join itself fails when its
            # bindings cannot be made (CHANNEL_ERROR), instead of SUBSCRIBED + a system error.
            self.drop(topic)
            refuse(problem)
            return
        join.reply(frame.ref, "ok", {"postgres_changes": bindings})
        for message_id, event, body in replay if join.hears_broadcast else []:
            meta = {"replayed": True, "id": message_id}
            join.push("broadcast", {"type": "broadcast", "event": event, "payload": body,
                                    "meta": meta})  # fmt: skip
        if bindings:
            if problem is None:
                self.service.hub.add_subscriptions(join)
                self._system(join, "ok", "Subscribed to PostgreSQL")
                join.live = True
            else:
                self._system(join, "error", problem)
        if join.presence_enabled:
            self.service.hub.presence_state(join)

    async def _prepare(self, join: ChannelJoin, bindings: list[dict[str, Any]]) -> str | None:
        """Validate the postgres_changes bindings and install their triggers.

        Returns None when they are ready, else the message of the system error to send.
        """
        feed = self.service.feed
        try:
            if feed is None:
                raise FilterError("Realtime is not connected to the database")
            role = await feed.role(join.principal.role)
            if not role.exists:
                raise FilterError(f'role "{join.principal.role}" does not exist')
            join.principal.bypass_rls = role.bypass_rls
            for binding in bindings:
                join.subscriptions.append(await self._binding(join, binding))
        except FilterError as exc:
            join.subscriptions.clear()
            return f"Unable to subscribe to changes with given parameters: {exc}"
        except Exception as exc:  # a database failure: say so on the channel, keep the socket
            log.exception("realtime: subscription failed")
            join.subscriptions.clear()
            return f"Unable to subscribe to PostgreSQL: {exc}"
        return None

    async def _binding(self, join: ChannelJoin, binding: dict[str, Any]) -> PgSubscription:
        feed = self.service.feed
        assert feed is not None
        event = str(binding.get("event") or "*").upper()
        schema = binding.get("schema")
        table = binding.get("table")
        raw_filter = binding.get("filter")
        select = binding.get("select")
        if event not in _EVENTS:
            raise FilterError(f"invalid event {event!r}")
        if not isinstance(schema, str) or not schema:
            raise FilterError("schema is required")
        if table is not None and not isinstance(table, str):
            raise FilterError("table must be a string")
        if raw_filter is not None and not isinstance(raw_filter, str):
            raise FilterError("filter must be a string")
        tables: list[TableInfo]
        conditions: tuple[Condition, ...] = ()
        if table in (None, "*"):
            if raw_filter:
                raise FilterError("a filter needs a table")
            tables = await feed.tables_in(schema)
        else:
            found = await feed.table(schema, table)
            if found is None:
                raise FilterError(f"no table {schema}.{table}")
            tables = [found]
            # A filter may name only columns the role can SELECT (as Supabase's
            # subscription check): an event never reveals, by matching or not, a value
            # the subscriber may not read.
            readable = found.column_types
            if raw_filter:
                allowed = await feed.selectable(join.principal.role, found)
                readable = {c: t for c, t in readable.items() if c in allowed}
            conditions = parse_filter(raw_filter, readable)
            if isinstance(select, list):
                unknown = [c for c in select if c not in found.column_types]
                if unknown:
                    raise FilterError(f"unknown columns in select: {unknown}")
        for info in tables:
            # Watch only what this role could ever receive: nothing else gains a trigger.
            if join.principal.bypass_rls or await feed.selectable(join.principal.role, info):
                await feed.watch(info)
        return PgSubscription(
            id=int(binding["id"]),
            params=binding,
            event=event,
            schema=schema,
            table=None if table in (None, "*") else table,
            conditions=conditions,
            select=tuple(str(c) for c in select) if isinstance(select, list) else None,
            join=join,
        )

    def _system(self, join: ChannelJoin, status: str, message: str, extension: str = "") -> None:
        payload = {
            "extension": extension or "postgres_changes",
            "status": status,
            "message": message,
            "channel": join.topic.removeprefix("realtime:"),
        }
        join.push("system", payload)

    async def presence(self, join: ChannelJoin, frame: Frame, payload: dict[str, Any]) -> None:
        """track / untrack; a track enables presence for a join that did not ask for it."""
        hub = self.service.hub
        event = payload.get("event")
        if event == "track":
            meta = payload.get("payload")
            if not isinstance(meta, dict):
                join.reply(frame.ref, "error", {"reason": "Presence track payload must be a map"})
                return
            if not await self.may_write(join, "presence"):
                join.reply(frame.ref, "error", {"reason": "unauthorized"})
                return
            if not join.presence_enabled:
                join.presence_enabled = True
                hub.presence_state(join)
            hub.track(join, meta)
        elif event == "untrack":
            hub.untrack(join)
        join.reply(frame.ref, "ok", {})

    async def refresh_token(self, join: ChannelJoin, token: Any) -> None:
        """access_token: re-verify; a bad token ends the channel as Supabase does."""
        if not isinstance(token, str) or not token or token.startswith("sb_"):
            return
        try:
            claims = self.service.token_claims(token)
        except AuthRejected as exc:
            self._shutdown(join, exc.message)
            return
        principal = principal_of(claims)
        if principal.role != join.principal.role and self.service.feed is not None:
            role = await self.service.feed.role(principal.role)
            principal.bypass_rls = role.exists and role.bypass_rls
        else:
            principal.bypass_rls = join.principal.bypass_rls
        if join.rights is not None:
            # A private channel is authorized again for the new user (Supabase does too):
            # writes are asked afresh, and without a read right the channel ends.
            rights, reason = await self._read_rights(join.topic, principal)
            if rights is None:
                self._shutdown(join, reason)
                return
            join.rights = rights
        join.principal = principal
        self._schedule_expiry(join, claims)

    async def _admit(
        self, topic: str, payload: dict[str, Any], config: dict[str, Any]
    ) -> str | tuple[dict[str, Any], Principal, Rights | None, list[tuple[str, Any, Any]]]:
        """The checks of a join: the topic, the token, a private channel's read rights and
        a replay's messages. Returns the reason to refuse, or (claims, principal, rights or
        None, messages to replay)."""
        if not topic.startswith("realtime:"):
            return "unmatched topic"
        if topic == "realtime:":
            return "TopicNameRequired: You must provide a topic name"
        token = payload.get("access_token") or payload.get("user_token") or self.apikey
        try:
            claims = self.service.token_claims(str(token))
        except AuthRejected as exc:
            return f"InvalidJWTToken: {exc.message}"
        principal = principal_of(claims)
        rights = None
        if config.get("private"):
            rights, reason = await self._read_rights(topic, principal)
            if rights is None:
                return reason
        broadcast = _mapping(config.get("broadcast"))
        replay: list[tuple[str, Any, Any]] = []
        if "replay" in broadcast:
            replay, reason = await self._replay(topic, rights is not None, broadcast["replay"])
            if reason:
                return reason
        return claims, principal, rights, replay

    async def _replay(
        self, topic: str, private: bool, params: Any
    ) -> tuple[list[tuple[str, Any, Any]], str]:
        """The database broadcasts a join's ``broadcast.replay`` ({since: epoch ms, limit:
        1-25, default 25}) asks for, or the reason to refuse the join: replay is for
        private channels only, as on Supabase."""
        if not private:
            return [], "UnableToReplayMessages: Replay is not allowed for public channels"
        since = params.get("since") if isinstance(params, dict) else None
        limit = params.get("limit") if isinstance(params, dict) else None
        limit = 25 if limit is None else limit
        if not (_whole(since) and _whole(limit)):
            return [], "UnableToReplayMessages: Replay params are not valid"
        feed = self.service.feed
        if feed is None:
            return [], "UnableToReplayMessages: Realtime was unable to replay messages"
        try:
            rows = await feed.replay(topic.removeprefix("realtime:"), since, max(1, min(limit, 25)))
        except psycopg.Error as exc:
            log.warning("realtime: replay of %s failed: %s", topic, exc)
            return [], "UnableToReplayMessages: Realtime was unable to replay messages"
        return rows, ""

    async def _read_rights(self, topic: str, principal: Principal) -> tuple[Rights | None, str]:
        """The read rights of ``principal`` on private channel ``topic``, or None and the
        reason to give (no read right at all, or a policy that failed)."""
        name = topic.removeprefix("realtime:")
        feed = self.service.feed
        if feed is None:
            return None, "Realtime is not connected to the database"
        try:
            broadcast, presence = await feed.channel_rights(
                name, principal.role, principal.claims_json, write=False
            )
        except PolicyError as exc:
            log.warning("realtime: the read policies of %s failed: %s", name, exc)
            return None, f"RlsPolicyError: {exc}"
        if not (broadcast or presence):
            return None, (
                f"Unauthorized: You do not have permissions to read from this Channel topic: {name}"
            )
        return Rights(broadcast_read=broadcast, presence_read=presence), ""

    async def may_write(self, join: ChannelJoin, extension: str) -> bool:
        """Whether ``join`` may broadcast (``extension`` "broadcast") or track presence
        ("presence"): always on a public channel; on a private one as its policies say,
        asked at the first use and kept until the channel's token changes. A policy that
        fails means no (logged), asked again next time."""
        rights = join.rights
        if rights is None:
            return True
        if rights.broadcast_write is None or rights.presence_write is None:
            feed = self.service.feed
            if feed is None:
                return False
            name = join.topic.removeprefix("realtime:")
            try:
                broadcast, presence = await feed.channel_rights(
                    name, join.principal.role, join.principal.claims_json, write=True
                )
            except PolicyError as exc:
                log.warning("realtime: the write policies of %s failed: %s", name, exc)
                return False
            rights.broadcast_write, rights.presence_write = broadcast, presence
        allowed = rights.broadcast_write if extension == "broadcast" else rights.presence_write
        return bool(allowed)

    def _schedule_expiry(self, join: ChannelJoin, claims: dict[str, Any]) -> None:
        old = self._expiry.pop(join.topic, None)
        if old is not None:
            old.cancel()
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            delay = max(0.0, float(exp) - time.time())
            # API keys live for years: no timer (and call_later has an upper bound).
            if delay < _LONGEST_TIMER_S:
                loop = asyncio.get_running_loop()
                self._expiry[join.topic] = loop.call_later(
                    delay, self._shutdown, join, "Token has expired"
                )

    def _shutdown(self, join: ChannelJoin, message: str) -> None:
        """End a channel from the server: system error, then phx_close."""
        if self.joins.get(join.topic) is not join:
            return
        self._system(join, "error", message, extension="system")
        join.push("phx_close", {})
        self.drop(join.topic)

    def drop(self, topic: str) -> None:
        """Forget one join of this socket."""
        join = self.joins.pop(topic, None)
        timer = self._expiry.pop(topic, None)
        if timer is not None:
            timer.cancel()
        if join is not None:
            self.service.hub.remove(join)

    def drop_all(self) -> None:
        """The socket is gone: forget every join (presences leave)."""
        for topic in list(self.joins):
            self.drop(topic)
        self.transport = None


def _whole(value: Any) -> TypeGuard[int]:
    """An integer of JSON (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (clients send odd payloads)."""
    return value if isinstance(value, dict) else {}


def principal_of(claims: dict[str, Any]) -> Principal:
    """The Principal a JWT's claims name."""
    return Principal(
        role=str(claims.get("role", "anon")),
        sub=str(claims.get("sub", "")),
        claims_json=json.dumps(claims),
    )
