"""Realtime of the reference server: Supabase's Phoenix websocket at /realtime/v1/websocket.

``add_routes(app, ctx)`` mounts ``GET /realtime/v1/websocket`` (``?apikey=...&vsn=1.0.0``
or ``2.0.0``), ``POST /realtime/v1/api/broadcast`` and its per-event form
``POST /realtime/v1/api/broadcast/{topic}/events/{event}``, and hooks the service's lifecycle
into the app: startup installs change capture and starts the fan-out task; cleanup closes
every socket, then the database connections.

A socket speaks Phoenix channels: ``phx_join`` (reply ``{postgres_changes: [...ids]}``,
then the ``system`` "Subscribed to PostgreSQL" message once bindings are live),
``heartbeat`` on topic ``phoenix``, ``access_token``, ``broadcast`` (``self``/``ack``),
``presence`` (track/untrack, presence_state/presence_diff) and ``phx_leave``. Message
shapes follow supabase/realtime (``realtime_channel.ex``) and realtime-js; see
docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Final

from aiohttp import web

from backend_checks.reference.context import AuthRejected, ServerContext
from backend_checks.reference.realtime_auth import PolicyError
from backend_checks.reference.realtime_capture import ChangeFeed
from backend_checks.reference.realtime_channels import Hub
from backend_checks.reference.realtime_protocol import (
    BINARY_PAYLOAD,
    VSN_1,
    VSN_2,
    UserBroadcast,
    Vsn,
)
from backend_checks.reference.realtime_socket import IDLE_TIMEOUT_S, Connection, principal_of

__all__ = ["SERVICE_KEY", "RealtimeService", "add_routes"]

log = logging.getLogger(__name__)

#: Where add_routes leaves the RealtimeService in ``ctx.extras`` (for benches and tests).
SERVICE_KEY: Final = "realtime"


class RealtimeService:
    """The Realtime part of one server: the change feed, the hub and the open sockets."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.feed: ChangeFeed | None = None
        self.hub = Hub(None)
        self.sockets: set[Connection] = set()
        self._pump: asyncio.Task[None] | None = None

    async def start(self, app: web.Application) -> None:
        """Open the change feed and start fanning changes out (aiohttp startup hook).

        Raises BackendUnavailable when the database cannot be reached.
        """
        self.feed = ChangeFeed(self.ctx.dsn)
        await self.feed.open()
        self.hub.feed = self.feed
        self._pump = asyncio.create_task(self._fan_out(), name="realtime-fan-out")

    async def close_sockets(self, app: web.Application) -> None:
        """Close every socket with 1001 "going away" (never raises). Called by the server
        before aiohttp's cleanup, which cuts the connections first: clients saw 1006
        (abnormal closure) where a server stopping says it is going away."""
        # All at once and bounded: a client that never answers the close frame must not
        # hold the shutdown (aiohttp waits for the answer per socket).
        closing = [asyncio.create_task(conn.close(going_away=True)) for conn in self.sockets]
        if closing:
            await asyncio.wait(closing, timeout=2.0)
            for task in closing:
                task.cancel()

    async def stop(self, app: web.Application) -> None:
        """Close any socket left, stop the fan-out, close the feed (cleanup hook; never
        raises)."""
        await self.close_sockets(app)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        if self.feed is not None:
            await self.feed.close()

    async def _fan_out(self) -> None:
        assert self.feed is not None
        async for change in self.feed.changes():
            try:
                await self.hub.dispatch(change)
            except Exception:  # one bad change must not stop delivery of the next
                log.exception("realtime: failed to deliver a %s on %s", change.type, change.table)

    def token_claims(self, token: str) -> dict[str, Any]:
        """Verified claims of a channel token; Supabase also requires ``role`` and ``exp``.

        No leeway past ``exp``: a join's expiry timer fires at ``exp``, so a token a few
        seconds stale is refused at the join (InvalidJWTToken) rather than accepted and
        closed at once. Raises AuthRejected.
        """
        claims = self.ctx.verify_jwt(token, leeway=0)
        if "role" not in claims or "exp" not in claims:
            raise AuthRejected("Fields `role` and `exp` are required in JWT")
        return claims

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """GET /realtime/v1/websocket: upgrade and serve one client until it goes."""
        apikey = request.query.get("apikey") or request.headers.get("apikey") or ""
        try:
            self.ctx.verify_jwt(apikey)
        except AuthRejected:
            return web.json_response({"message": "Invalid API key"}, status=401)
        vsn_param = request.query.get("vsn", VSN_1)
        if vsn_param not in (VSN_1, VSN_2):
            return web.json_response({"message": f"unsupported vsn {vsn_param}"}, status=400)
        vsn: Vsn = VSN_2 if vsn_param == VSN_2 else VSN_1
        # Phoenix does not compress (per-socket deflate would undo encode-once fan-out).
        ws = web.WebSocketResponse(compress=False, receive_timeout=IDLE_TIMEOUT_S)
        await ws.prepare(request)
        conn = Connection(self, ws, request.transport, vsn, apikey)
        self.sockets.add(conn)
        try:
            await conn.serve()
        finally:
            self.sockets.discard(conn)
            conn.drop_all()
        return ws

    def _authorize(self, request: web.Request) -> dict[str, Any]:
        """Check a REST broadcast's token (``Authorization: Bearer``, else ``apikey``);
        returns its claims.

        Raises AuthRejected.
        """
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return self.token_claims(token or request.headers.get("apikey", ""))

    async def _channel(self, topic: str, private: bool, claims: dict[str, Any]) -> str | None:
        """The hub's channel a REST broadcast to ``topic`` goes to, or None when it is
        private and the token's user may not broadcast there (it is then skipped, as
        Supabase skips it; a policy that fails counts as no)."""
        if not private:
            return f"realtime:{topic}"
        if self.feed is None:
            return None
        principal = principal_of(claims)
        try:
            allowed, _presence = await self.feed.channel_rights(
                topic, principal.role, principal.claims_json, write=True
            )
        except PolicyError as exc:
            log.warning("realtime: the write policies of %s failed: %s", topic, exc)
            return None
        return f"private:realtime:{topic}" if allowed else None

    async def api_broadcast(self, request: web.Request) -> web.Response:
        """POST /realtime/v1/api/broadcast: ``{messages: [{topic, event, payload,
        private?}]}`` -> 202; a private message goes out only where the token's user may
        broadcast."""
        try:
            claims = self._authorize(request)
            body = await request.json()
            messages = body["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
            # Checked whole before any is sent: a null topic went out to "realtime:None".
            for item in messages:
                if not (isinstance(item["topic"], str) and isinstance(item["event"], str)):
                    raise TypeError("topic and event must be strings")
                if "payload" not in item:  # a KeyError below would come half-way through
                    raise KeyError("payload")
            channels: dict[tuple[str, bool], str | None] = {}
            for item in messages:
                key = (item["topic"], item.get("private") is True)
                if key not in channels:
                    channels[key] = await self._channel(*key, claims)
                if (channel := channels[key]) is not None:
                    payload = {
                        "type": "broadcast",
                        "event": item["event"],
                        "payload": item["payload"],
                    }
                    self.hub.broadcast(channel, payload, None)
        except AuthRejected as exc:
            return web.json_response({"message": exc.message}, status=401)
        except (ValueError, KeyError, TypeError):
            return web.json_response({"message": "expected {messages: [...]}"}, status=400)
        return web.Response(status=202)

    async def api_broadcast_event(self, request: web.Request) -> web.Response:
        """POST /realtime/v1/api/broadcast/{topic}/events/{event} (realtime-js's httpSend):
        the body is the payload, JSON, or bytes (application/octet-stream) that only 2.0.0
        sockets receive -> 202."""
        try:
            claims = self._authorize(request)
        except AuthRejected as exc:
            return web.json_response({"message": exc.message}, status=401)
        topic, event = request.match_info["topic"], request.match_info["event"]
        body = await request.read()
        binary = request.content_type == "application/octet-stream"
        if not binary:
            try:
                payload = json.loads(body)
            except ValueError:
                return web.json_response({"message": "the body must be JSON"}, status=400)
        channel = await self._channel(topic, request.query.get("private") == "true", claims)
        if channel is None:
            return web.Response(status=202)  # private, and not this user's to send on
        if binary:
            message = UserBroadcast(f"realtime:{topic}", event, body, BINARY_PAYLOAD)
            self.hub.broadcast_binary(channel, message, None)
        else:
            envelope = {"type": "broadcast", "event": event, "payload": payload}
            self.hub.broadcast(channel, envelope, None)
        return web.Response(status=202)


def add_routes(app: web.Application, ctx: ServerContext) -> None:
    """Mount Realtime on ``app`` and hook its startup and cleanup (see module docstring)."""
    service = RealtimeService(ctx)
    ctx.extras[SERVICE_KEY] = service
    app.router.add_get("/realtime/v1/websocket", service.websocket)
    app.router.add_post("/realtime/v1/api/broadcast", service.api_broadcast)
    app.router.add_post(
        "/realtime/v1/api/broadcast/{topic}/events/{event}", service.api_broadcast_event
    )
    app.on_startup.append(service.start)
    app.on_cleanup.append(service.stop)
