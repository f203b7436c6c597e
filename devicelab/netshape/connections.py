"""The clients' links, and each client connection wrapped onto its client's link.

A client (source address) has one ``Link`` (``link.Channel`` down and up), shared by all
its connections and kept until the bytes of its last one have crossed it. ``wrap`` swaps a
new connection's reader and writer in mitmproxy's ``ConnectionHandler.transports`` for the
shaped ones (``transport``), before mitmproxy reads a byte; ``hold_server`` holds what goes
to its server until the device's bytes would have arrived; ``drop`` closes it all when the
client goes; ``cut_all`` cuts every open connection (the link went offline). The NetShape
addon (``addon``) calls these from its mitmproxy hooks, on the proxy's event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mitmproxy.connection import Client

from devicelab.netshape.link import Channel, Shape
from devicelab.netshape.records import FlowRecord
from devicelab.netshape.transport import (
    ConnectionClock,
    HeldWriter,
    ServerReader,
    ShapedReader,
    ShapedWriter,
    bytes_waiting,
)

__all__ = ["Connection", "Connections", "Link"]

# mitmproxy hands a new connection over a few milliseconds after accepting it; bytes the
# device sent at once are taken from the accept, up to this long before (a bound on a
# clock step, not on mitmproxy).
_ACCEPT_LAG_MAX_S = 0.05


@dataclass
class Link:
    """One client's emulated link, and how many of its connections use it."""

    down: Channel
    up: Channel
    connections: int = 0


@dataclass
class Connection:
    """One client connection on its client's link (``link_key``), and its flows' state."""

    link_key: str
    reader: ShapedReader
    writer: ShapedWriter
    clock: ConnectionClock
    # Its current request is for the control endpoint (``cut_all`` spares it then).
    control: bool = False
    records: dict[str, FlowRecord] = field(default_factory=dict)
    servers: dict[str, HeldWriter] = field(default_factory=dict)
    # Flow id -> the writer's offset where its response head starts.
    heads: dict[str, int] = field(default_factory=dict)
    # Hosts (lower-cased) this connection was sent to by an alias: the lab's targets.
    alias_targets: set[str] = field(default_factory=set)
    # A CONNECT was let through: every request on it goes to the tunnel's destination,
    # judged at the CONNECT (mitmproxy names the alias's target as their host).
    tunnel: bool = False


class Connections:
    """The open client connections (by mitmproxy's client id) and the clients' links.

    ``shape_down`` and ``shape_up`` give the link's current shapes (a profile change
    applies to the links already open).
    """

    def __init__(self, shape_down: Callable[[], Shape], shape_up: Callable[[], Shape]) -> None:
        self._shape_down, self._shape_up = shape_down, shape_up
        self.links: dict[str, Link] = {}
        self._open: dict[str, Connection] = {}

    def get(self, client_id: str) -> Connection | None:
        """The open connection of mitmproxy's client ``client_id``, or None."""
        return self._open.get(client_id)

    def wrap(self, client: Client, host: str, io: Any) -> None:
        """Put ``client``'s connection (its reader and writer ``io``, from mitmproxy's
        handler) onto the link of ``host``, made for its first connection."""
        link = self.links.get(host)
        if link is None:
            link = Link(Channel(self._shape_down), Channel(self._shape_up))
            self.links[host] = link
        link.connections += 1
        clock = ConnectionClock()
        loop = asyncio.get_running_loop()
        accepted = loop.time() - min(time.time() - client.timestamp_start, _ACCEPT_LAG_MAX_S)
        first_since = accepted if bytes_waiting(io.reader, io.writer) else None
        reader = ShapedReader(io.reader, link.up, clock, first_since)
        writer = ShapedWriter(io.writer, link.down, clock)
        io.reader, io.writer = reader, writer
        self._open[client.id] = Connection(host, reader, writer, clock)

    def hold_server(self, conn: Connection, server_id: str, io: Any) -> None:
        """Hold what ``conn`` sends to its server ``server_id`` (its reader and writer
        ``io``) until the device's bytes would have arrived (``ConnectionClock``)."""
        held = HeldWriter(io.writer, conn.clock)
        io.reader, io.writer = ServerReader(io.reader, conn.clock), held
        conn.servers[server_id] = held

    def server_closed(self, client_id: str, server_id: str) -> None:
        """Close the server side's socket and forget its writer (closing twice is
        harmless)."""
        conn = self._open.get(client_id)
        held = conn.servers.pop(server_id, None) if conn is not None else None
        if held is not None:
            held.close()

    def drop(self, client_id: str) -> None:
        """Forget the connection and close its server sides; a client's link goes once
        its last connection's bytes have crossed it. Its unfinished flow records say
        ``connection closed``."""
        conn = self._open.pop(client_id, None)
        if conn is None:
            return
        conn.reader.abort()
        if conn.writer.device_gone():  # else a close waits for the bytes still queued
            conn.writer.pipe.abort()
        for held in conn.servers.values():
            held.close()
        conn.servers.clear()
        link = self.links.get(conn.link_key)
        if link is not None:
            # The bytes still queued share the link with a new connection of the client;
            # a fresh link would give that one the whole rate beside them.
            conn.writer.pipe.after_all(lambda: self._release(conn.link_key, link))
        for record in conn.records.values():
            if record.end is None and record.error is None:
                record.error = "connection closed"

    def _release(self, key: str, link: Link) -> None:
        """One connection of ``link`` (client ``key``) is done; forget the link after its
        last."""
        link.connections -= 1
        if link.connections <= 0 and self.links.get(key) is link:
            del self.links[key]

    def cut_all(self) -> None:
        """Cut every open connection but one whose current request is for the control
        endpoint (its answer, to the request that took the link offline, goes out)."""
        for conn in list(self._open.values()):
            if not conn.control:
                conn.writer.abort()
                conn.reader.abort()
                for server in conn.servers.values():
                    server.abort()  # what was still on the air is lost
