"""NetShape: the mitmproxy addon that puts every client through an emulated network link.

Each client (source address) gets its own link (``link.Channel`` down and up); each of its
connections is wrapped below mitmproxy's protocol layers (``transport``, ``connections``),
so HTTP(S) requests and responses, WebSocket messages and raw TCP are all delayed, paced
and shared fairly by the same model; each HTTP flow is timed into its record (``timing``).
Options are declared in ``load`` and validated in ``configure`` (their parsers in
``options``):

    netshape_profile     a NetworkProfile as JSON ("" = no shaping)
    netshape_allow       client networks allowed to use the proxy (CIDR); others are refused
    netshape_ws_history  WebSocket messages kept per flow (older ones are dropped)
    netshape_records     flow timing records kept (oldest dropped first)
    netshape_networks    named profiles (a JSON object name -> NetworkProfile) that
                         ``POST profile`` switches to by name

Runtime control (no restart): change ``netshape_profile``, call ``go_offline`` /
``go_online``, or, from any allowed client, the control endpoint ``http://netshape.devicelab/``
(``GET status``, ``GET records``, ``POST profile`` with a profile JSON body or the name of
one of ``netshape_networks``, ``POST offline?seconds=N``, ``POST online``), answered by
``control``. A client off this machine does not reach its loopback through the proxy, but
for the aliases (``destination``); the flow records keep no query values (``records``).

Why below the protocol layers: mitmproxy's hooks see whole messages and cannot pause a
streamed body, so pacing there would either buffer bodies or stack WebSocket messages.
The wrapping swaps the client's reader and writer in ``ConnectionHandler.transports`` at
``client_connected``, before mitmproxy reads a byte (mitmproxy 12's layout; the netshape
tests fail loudly if a mitmproxy upgrade changes it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.connection import Client
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from devicelab.models.network import NetworkProfile
from devicelab.models.proxy_status import ProxyStatus
from devicelab.netshape import control, wsscheme
from devicelab.netshape.connections import Connections
from devicelab.netshape.destination import (
    Refusals,
    client_allowed,
    loopback_ip,
    reaches_loopback,
    refusal,
)
from devicelab.netshape.link import Shape, shapes_of
from devicelab.netshape.options import (
    CONTROL_HOST,
    DEFAULT_ALLOW,
    bad_option,
    check_offline_seconds,
    declare,
    parse_aliases,
    parse_allow,
    parse_networks,
    parse_profile,
)
from devicelab.netshape.records import FlowRecord
from devicelab.netshape.timing import FlowTimer

__all__ = ["CONTROL_HOST", "DEFAULT_ALLOW", "NetShape", "check_offline_seconds", "shapes_of"]

logger = logging.getLogger("devicelab.netshape")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


#: Bytes of WebSocket history kept per flow, beside the message count (the newest message
#: is always kept).
WS_HISTORY_BYTES = 1 << 20


class NetShape:
    """The addon. One instance per proxy; its state lives on the proxy's event loop."""

    def __init__(self) -> None:
        self.profile: NetworkProfile | None = None
        self._down, self._up = Shape(), Shape()
        self._allow: list[_Network] = []
        self._connections = Connections(self._shape_down, self._shape_up)
        self._timer = FlowTimer()
        self._offline_until: float | None = None
        self._online_timer: asyncio.TimerHandle | None = None
        self._aliases: dict[str, str] = {}
        self._networks: dict[str, NetworkProfile] = {}
        # Refused clients, and clients refused a destination, for their log lines; and
        # requests refused while offline (counted afresh each time the link comes back).
        self._refusals = Refusals(logger)
        self._offline_refusals = Refusals(logger, level=logging.INFO)

    # --- options -------------------------------------------------------------------------
    def load(self, loader: Any) -> None:
        """Declare the addon's options (and let mitmproxy take ``GET ws://`` requests)."""
        wsscheme.install()
        declare(loader)

    def configure(self, updated: set[str]) -> None:
        """Validate the options, then apply them: one wrong option changes nothing (a
        profile given beside a bad allow-list is not applied and then rolled back).
        Raises mitmproxy's OptionsError when one is wrong."""
        opts: Any = ctx.options
        profile = self.profile
        if "netshape_profile" in updated:
            profile = parse_profile(opts.netshape_profile)
        allow = self._allow
        if "netshape_allow" in updated:
            allow = parse_allow(opts.netshape_allow)
        if "netshape_ws_history" in updated and opts.netshape_ws_history < 1:
            raise bad_option("netshape_ws_history must be at least 1")
        aliases = self._aliases
        if "netshape_aliases" in updated:
            aliases = parse_aliases(opts.netshape_aliases)
        if "netshape_records" in updated and opts.netshape_records < 1:
            raise bad_option("netshape_records must be at least 1")
        networks = self._networks
        if "netshape_networks" in updated:
            networks = parse_networks(opts.netshape_networks)
        self._allow, self._aliases, self._networks = allow, aliases, networks
        if "netshape_records" in updated:
            self._timer.keep(opts.netshape_records)
        if "netshape_profile" in updated:
            self._apply_profile(profile)

    def _apply_profile(self, profile: NetworkProfile | None) -> None:
        changed = profile != self.profile
        self.profile = profile
        self._down, self._up = shapes_of(profile)
        if changed:  # mitmproxy's rollback of a failed update re-applies the same one
            logger.info("network profile: %s", profile.id or profile.label if profile else "none")
            self._offline_refusals.clear()
        if profile is not None and profile.offline:
            self.cut_all()

    # --- runtime control ----------------------------------------------------------------
    @property
    def offline(self) -> bool:
        """True while the link refuses connections (offline profile or ``go_offline``)."""
        if self.profile is not None and self.profile.offline:
            return True
        return self._offline_until is not None

    def go_offline(self, seconds: float | None = None) -> None:
        """Cut every connection, and every request of a new one, for ``seconds`` (None:
        until online). Raises ValueError when ``seconds`` is not a positive number."""
        check_offline_seconds(seconds)
        if self._online_timer is not None:
            self._online_timer.cancel()
            self._online_timer = None
        loop = asyncio.get_running_loop()
        self._offline_until = math.inf if seconds is None else loop.time() + seconds
        if seconds is not None:
            self._online_timer = loop.call_later(seconds, self.go_online)
        logger.info("offline%s", "" if seconds is None else f" for {seconds:g} s")
        self.cut_all()

    def go_online(self) -> None:
        """Accept connections again."""
        if self._online_timer is not None:
            self._online_timer.cancel()
            self._online_timer = None
        self._offline_until = None
        self._offline_refusals.clear()
        logger.info("online")

    def records(self) -> list[FlowRecord]:
        """The flow timing records kept so far, oldest first."""
        return self._timer.records()

    def cut_all(self) -> None:
        """Cut every open connection but one whose current request is for the control
        endpoint (its answer, to the request that took the link offline, goes out)."""
        self._connections.cut_all()

    def _shape_down(self) -> Shape:
        return self._down

    def _shape_up(self) -> Shape:
        return self._up

    # --- connections --------------------------------------------------------------------
    def _handler(self, client: Client) -> Any:
        """mitmproxy's ConnectionHandler of ``client`` (None once it is gone)."""
        master: Any = ctx.master
        return master.addons.get("proxyserver").connections.get(client.id)

    def client_connected(self, client: Client) -> None:
        """Refuse clients outside the allow-list or while offline; wrap the rest."""
        host = str(client.peername[0]) if client.peername else "?"
        if not client_allowed(host, self._allow):
            allow = ", ".join(str(n) for n in self._allow)
            self._refusals.say(host, f"refused client {host}: not in the allow-list ({allow})")
            client.error = f"client {host} is not allowed (netshape_allow)"
            return
        # While offline a new connection is still accepted, so that the control endpoint
        # can bring the link back; any other request on it is cut (``_cut_if_offline``).
        handler = self._handler(client)
        if handler is None:
            logger.warning("cannot shape client %s: mitmproxy's handler was not found", host)
            return
        self._connections.wrap(client, host, handler.transports[client])

    async def _loopback_refusal(self, data: ServerConnectionHookData) -> str | None:
        client = _client_host(data.client)
        conn = self._connections.get(data.client.id)
        if data.server.address is None or loopback_ip(client):
            return None
        host, port = data.server.address
        if conn is not None and host.lower() in conn.alias_targets:
            return None
        if not await reaches_loopback(host, port, data.server.peername):
            return None
        why = f"{host}:{port} resolves to the proxy's loopback"
        self._log_refused_destination(client, f"{host}:{port}", why)
        return f"devicelab proxy: {why}"

    async def server_connected(self, data: ServerConnectionHookData) -> None:
        """Cut a connection that reached loopback for a client off this machine (a name
        that resolved elsewhere at ``server_connect``); hold what goes to the server until
        the device's bytes would have arrived (the uplink hands them to mitmproxy early,
        see ``ConnectionClock``)."""
        handler = self._handler(data.client)
        if await self._loopback_refusal(data) is not None:
            io = handler.transports.get(data.server) if handler is not None else None
            if io is not None and io.writer is not None:
                io.writer.transport.abort()  # nothing of the request goes out
            return
        conn = self._connections.get(data.client.id)
        if conn is None or handler is None or data.server.transport_protocol != "tcp":
            return
        io = handler.transports.get(data.server)
        if io is None or io.reader is None or io.writer is None:
            return
        self._connections.hold_server(conn, data.server.id, io)

    def server_disconnected(self, data: ServerConnectionHookData) -> None:
        """Close the server side's socket and forget its writer.

        mitmproxy closes it itself, except when its handler is cancelled while it reports
        the server's close (a ``Connection: close`` exchange often is): the socket would
        stay in CLOSE-WAIT for good. Closing twice is harmless.
        """
        self._connections.server_closed(data.client.id, data.server.id)

    def client_disconnected(self, client: Client) -> None:
        """Forget the connection and close its server sides (mitmproxy is about to, but
        may skip it, see ``server_disconnected``, which comes after this hook); a client's
        link goes once its last connection's bytes have crossed it."""
        self._connections.drop(client.id)

    # --- flows --------------------------------------------------------------------------
    def _note_request(self, flow: http.HTTPFlow) -> None:
        """Note whether the current request of ``flow``'s connection is for the control
        endpoint: a connection that once carried one is otherwise cut like any other."""
        if (conn := self._connections.get(flow.client_conn.id)) is not None:
            conn.control = _is_control(flow)

    def _cut_if_offline(self, flow: http.HTTPFlow) -> bool:
        """Cut ``flow`` when the link is offline and it is not for the control endpoint."""
        if not self.offline or _is_control(flow):
            return False
        host = _client_host(flow.client_conn)
        self._offline_refusals.say(host, f"refused a request of client {host}: the link is offline")
        killable: Any = flow  # mitmproxy's Flow.kill is untyped
        killable.kill()
        return True

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """Refuse a tunnel while the link is offline or to a destination the client may
        not reach; send one to an alias to its host."""
        self._note_request(flow)
        if not self._cut_if_offline(flow) and not self._refuse_destination(flow):
            self._resolve_alias(flow)
            if (conn := self._connections.get(flow.client_conn.id)) is not None:
                conn.tunnel = True

    def _resolve_alias(self, flow: http.HTTPFlow) -> None:
        target = self._aliases.get(flow.request.host.lower())
        if target is not None:
            flow.request.host = target
            if (conn := self._connections.get(flow.client_conn.id)) is not None:
                conn.alias_targets.add(target.lower())

    def _refuse_destination(self, flow: http.HTTPFlow) -> bool:
        """Answer 403 when ``flow``'s client may not reach its destination (``destination``:
        only this machine's clients reach its loopback, but for the aliases)."""
        conn = self._connections.get(flow.client_conn.id)
        if conn is not None and conn.tunnel:
            return False
        client = _client_host(flow.client_conn)
        why = refusal(client, flow.request.host, flow.request.port, self._aliases)
        if why is None:
            return False
        self._log_refused_destination(client, f"{flow.request.host}:{flow.request.port}", why)
        flow.response = http.Response.make(
            403, f"devicelab proxy: {why}\n", {"content-type": "text/plain"}
        )
        return True

    def _log_refused_destination(self, client: str, destination: str, why: str) -> None:
        self._refusals.say(
            f"{client} -> {destination}",
            f"refused client {client}: {why}; only this machine's clients reach its loopback"
            " (a lab target: by its alias, netshape_aliases)",
        )

    async def server_connect(self, data: ServerConnectionHookData) -> None:
        """Refuse a connection for a client off this machine to a name that resolves to
        loopback (names and addresses were judged at the request, ``_refuse_destination``)."""
        why = await self._loopback_refusal(data)
        if why is not None:
            data.server.error = why

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Start the flow's record; stream the body so big uploads are paced, not buffered.
        Refuse (403) a destination the client may not reach."""
        self._note_request(flow)
        if self._cut_if_offline(flow) or self._refuse_destination(flow):
            return
        self._resolve_alias(flow)
        conn = self._connections.get(flow.client_conn.id)
        if _is_control(flow) or conn is None:
            return
        self._timer.start(conn, flow)

    def request(self, flow: http.HTTPFlow) -> None:
        """Answer the control endpoint."""
        if _is_control(flow):
            control.answer(self, flow, self._networks)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Stream the body (paced by the link) and time the first byte at the device."""
        self._timer.response_head(self._connections.get(flow.client_conn.id), flow)

    def response(self, flow: http.HTTPFlow) -> None:
        """Time the last byte at the device (the body has been handed to the link)."""
        self._timer.response_end(self._connections.get(flow.client_conn.id), flow)

    def error(self, flow: http.HTTPFlow) -> None:
        """Mark the flow's record as failed."""
        self._timer.failed(self._connections.get(flow.client_conn.id), flow)

    def tls_failed_server(self, data: Any) -> None:
        """Say how to reach a test server whose certificate the proxy does not trust."""
        error = str(getattr(data.conn, "error", "") or "")
        if "verify failed" in error.lower() and ctx.options.ssl_insecure is False:
            logger.warning(
                "HTTPS server %s: %s; for a test server with its own certificate, start the"
                " proxy with --upstream-ca FILE (its CA) or --no-verify-upstream"
                " (ShapedProxy(upstream_ca=...) or verify_upstream=False)",
                data.conn.sni or data.conn.address,
                error,
            )

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Count the message and keep the flow's message history bounded, in messages and
        in bytes (200 messages of 1 MB each would keep 200 MB per flow)."""
        assert flow.websocket is not None
        keep = ctx.options.netshape_ws_history
        messages = flow.websocket.messages
        if len(messages) > keep:
            del messages[:-keep]
        size = 0
        for kept, message in enumerate(reversed(messages)):
            size += len(message.content)
            if size > WS_HISTORY_BYTES and kept:
                del messages[: len(messages) - kept]
                break
        self._timer.websocket_message(flow)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        """Forget the WebSocket flow's live record and its messages (a closed flow is freed
        only by a full garbage collection: 100 sessions of big messages held 600 MB)."""
        self._timer.websocket_end(flow)
        if flow.websocket is not None:
            flow.websocket.messages.clear()

    def status(self) -> ProxyStatus:
        """The addon's state: the profile, whether the link is offline, and each client's
        open connections. Raises nothing."""
        return ProxyStatus(
            profile=self.profile,
            offline=self.offline,
            links={k: v.connections for k, v in self._connections.links.items()},
        )


def _is_control(flow: http.HTTPFlow) -> bool:
    """Whether ``flow`` is for the control endpoint (host names are case-insensitive)."""
    return flow.request.pretty_host.lower().rstrip(".") == CONTROL_HOST


def _client_host(client: Client) -> str:
    return str(client.peername[0]) if client.peername else "?"
