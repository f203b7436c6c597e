"""Flow timing: each HTTP flow's record (``records.FlowRecord``), timed at the device's end
of the link.

A record starts when the bytes completing the request headers left the device (the
uplink's last arrival), counts the request and response bodies as they stream through,
and takes its first and last response bytes' delivery to the device from the downlink
(``Pipe.when_delivered``). The NetShape addon (``addon``) calls ``FlowTimer`` from its
mitmproxy hooks, on the proxy's event loop; the records of a connection's flows in
progress live on the connection (``connections.Connection``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from mitmproxy import http

from devicelab.netshape.connections import Connection
from devicelab.netshape.records import FlowRecord, redacted_url

__all__ = ["FlowTimer"]


class FlowTimer:
    """The flow records kept (the newest 10,000 until ``keep`` says otherwise), and the
    live records of open WebSocket flows."""

    def __init__(self) -> None:
        self._records: deque[FlowRecord] = deque(maxlen=10_000)
        self._ws_records: dict[str, FlowRecord] = {}

    def keep(self, count: int) -> None:
        """Keep the newest ``count`` records from now on (older ones are dropped)."""
        self._records = deque(self._records, maxlen=count)

    def records(self) -> list[FlowRecord]:
        """The flow timing records kept so far, oldest first."""
        return list(self._records)

    def start(self, conn: Connection, flow: http.HTTPFlow) -> None:
        """Start ``flow``'s record, at its request headers; stream the request body so
        big uploads are paced, not buffered, and counted."""
        arrival = conn.reader.pipe.last_arrival
        start = time.time() - (asyncio.get_running_loop().time() - arrival)
        record = FlowRecord(
            id=flow.id,
            client=conn.link_key,
            method=flow.request.method,
            url=redacted_url(flow.request.pretty_url),
            start=start,
        )
        conn.records[flow.id] = record
        self._records.append(record)

        def count_up(data: bytes) -> bytes:
            record.bytes_up += len(data)
            return data

        # Streamed, not buffered: the body goes on as it crosses the uplink.
        flow.request.stream = count_up

    def response_head(self, conn: Connection | None, flow: http.HTTPFlow) -> None:
        """Stream the response body (paced by the link) and time the first byte at the
        device."""
        record = conn.records.get(flow.id) if conn else None
        if conn is None or record is None or flow.response is None:
            return
        record.status = flow.response.status_code
        pipe = conn.writer.pipe
        offset = conn.heads[flow.id] = pipe.queued_total

        def count_down(data: bytes) -> bytes:
            record.bytes_down += len(data)
            return data

        # Streamed, not buffered: the link paces the body as it comes from the server.
        flow.response.stream = count_down

        def first_byte() -> None:
            record.first_byte = time.time()

        pipe.when_delivered(offset + 1, first_byte)

    def response_end(self, conn: Connection | None, flow: http.HTTPFlow) -> None:
        """Time the last byte at the device (the body has been handed to the link)."""
        record = conn.records.pop(flow.id, None) if conn else None
        if conn is None or record is None:
            return
        pipe = conn.writer.pipe
        # A response without a body (a WebSocket's 101) may reach this hook before its
        # head is on the link: its end is its first byte's delivery at the earliest.
        offset = max(pipe.queued_total, conn.heads.pop(flow.id, -1) + 1)
        if flow.websocket is not None:
            self._ws_records[flow.id] = record

        def end() -> None:
            record.end = time.time()

        pipe.when_delivered(offset, end)

    def failed(self, conn: Connection | None, flow: http.HTTPFlow) -> None:
        """Mark the flow's record as failed."""
        record = conn.records.pop(flow.id, None) if conn else None
        if conn is not None:
            conn.heads.pop(flow.id, None)
        if record is not None and flow.error is not None:
            record.error = flow.error.msg

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Count a message of the WebSocket flow."""
        if (record := self._ws_records.get(flow.id)) is not None:
            record.ws_messages += 1

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        """Forget the WebSocket flow's live record."""
        self._ws_records.pop(flow.id, None)
