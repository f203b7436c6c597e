"""A small, fast Supabase Realtime client (Phoenix vsn 1.0.0 over aiohttp) for checks.

Works against the reference server and a real Supabase project alike. One
:class:`Subscriber` is one websocket with one channel; it timestamps every frame on
arrival with ``time.perf_counter()`` (the clock the checks also read when they insert),
before any parsing, so many subscribers in one process stay cheap and comparable.

Lifecycle: ``await Subscriber.connect(...)`` -> ``await sub.join(...)`` (returns the
setup timings) -> ``sub.start()`` (reader task) -> ``await sub.close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

__all__ = ["HEARTBEAT_S", "JoinTiming", "RealtimeRefused", "Subscriber", "websocket_url"]

#: realtime-js sends a heartbeat every 25 s; Phoenix drops sockets silent for 60 s.
HEARTBEAT_S: Final = 25.0


class RealtimeRefused(Exception):
    """The server refused a join or a subscription (the reason is its own message)."""


@dataclass(frozen=True, slots=True)
class JoinTiming:
    """Seconds from sending phx_join to the reply, and to "Subscribed to PostgreSQL"."""

    reply_s: float
    subscribed_s: float | None
    binding_ids: tuple[int, ...] = ()


def websocket_url(base_url: str, apikey: str, vsn: str = "1.0.0") -> str:
    """The Realtime websocket URL of a Supabase base URL (http(s) -> ws(s))."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return f"{base}/realtime/v1/websocket?apikey={apikey}&vsn={vsn}"


@dataclass(eq=False)
class Subscriber:
    """One websocket with one channel; ``on_change(text, arrived_at)`` sees each change."""

    ws: aiohttp.ClientWebSocketResponse
    topic: str = ""
    join_ref: str | None = None
    on_change: Callable[[str, float], None] | None = None
    frames: list[tuple[float, str]] = field(default_factory=list)
    keep_frames: bool = False
    _refs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _reader: asyncio.Task[None] | None = None
    _beat: asyncio.Task[None] | None = None
    _reply_s: float | None = None
    closed_reason: str = ""

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, url: str, **kwargs: Any) -> Subscriber:
        """Open the websocket (no compression, as realtime clients use it).

        Raises aiohttp.ClientError when the server refuses or cannot be reached.
        """
        ws = await session.ws_connect(url, compress=0, autoping=True, max_msg_size=0)
        return cls(ws=ws, **kwargs)

    def _ref(self) -> str:
        return str(next(self._refs))

    async def send(self, topic: str, event: str, payload: Any, join_ref: str | None = None) -> str:
        """Push one message; returns its ref."""
        ref = self._ref()
        frame = {"topic": topic, "event": event, "payload": payload, "ref": ref}
        frame["join_ref"] = join_ref
        await self.ws.send_str(json.dumps(frame))
        return ref

    async def join(
        self,
        channel: str,
        *,
        postgres_changes: list[dict[str, Any]] | None = None,
        access_token: str | None = None,
        broadcast: dict[str, Any] | None = None,
        private: bool = False,
        timeout: float = 10.0,
    ) -> JoinTiming:
        """Join ``realtime:<channel>`` and wait for the reply and, with postgres_changes,
        for the system "Subscribed to PostgreSQL" message. ``private``: a private channel
        (Realtime Authorization: the policies on realtime.messages decide).

        Raises RealtimeRefused on an error reply or system error, TimeoutError after
        ``timeout`` seconds (supabase-js gives up after 10 s too) saying what was still
        missing: the reply, or the "Subscribed" message after an ok reply.
        """
        self.topic = f"realtime:{channel}"
        config = {
            "broadcast": broadcast or {"ack": False, "self": False},
            "presence": {"key": "", "enabled": False},
            "postgres_changes": postgres_changes or [],
            "private": private,
        }
        payload: dict[str, Any] = {"config": config}
        if access_token:
            payload["access_token"] = access_token
        started = time.perf_counter()
        ref = await self.send(self.topic, "phx_join", payload, join_ref=None)
        self.join_ref = ref
        try:
            async with asyncio.timeout(timeout):
                return await self._await_join(ref, started, bool(postgres_changes))
        except TimeoutError:
            # A bare TimeoutError says nothing; which step never came is the finding.
            raise TimeoutError(self._missing(timeout)) from None

    def _missing(self, timeout: float) -> str:
        if self._reply_s is None:
            return f"no phx_reply to the join within {timeout:g} s"
        return f"phx_reply ok but no 'Subscribed to PostgreSQL' system message within {timeout:g} s"

    async def _await_join(self, ref: str, started: float, changes: bool) -> JoinTiming:
        """Read frames until the join is complete (see :meth:`join`)."""
        self._reply_s = None
        ids: tuple[int, ...] = ()
        while True:
            msg = await self.ws.receive()
            now = time.perf_counter()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RealtimeRefused(f"socket closed while joining ({msg.type.name})")
            frame = json.loads(msg.data)
            event, body = frame.get("event"), frame.get("payload") or {}
            if event == "phx_reply" and frame.get("ref") == ref:
                if body.get("status") != "ok":
                    raise RealtimeRefused(str(body.get("response")))
                self._reply_s = now - started
                bindings = (body.get("response") or {}).get("postgres_changes") or []
                ids = tuple(int(b["id"]) for b in bindings)
                if not changes:
                    return JoinTiming(self._reply_s, None, ids)
            elif event == "system" and frame.get("topic") == self.topic:
                if body.get("status") != "ok":
                    raise RealtimeRefused(str(body.get("message")))
                if self._reply_s is not None:
                    return JoinTiming(self._reply_s, now - started, ids)

    def start(self) -> None:
        """Start reading frames and sending heartbeats in the background."""
        self._reader = asyncio.create_task(self._read())
        self._beat = asyncio.create_task(self._heartbeat())

    async def _read(self) -> None:
        ws, on_change = self.ws, self.on_change
        async for msg in ws:
            arrived = time.perf_counter()
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            text: str = msg.data
            if self.keep_frames:
                self.frames.append((arrived, text))
            # Cheap tests before any parsing. System frames first: a postgres_changes
            # error arrives as `system` with extension "postgres_changes", which the
            # change test below would otherwise take for a change. Inside a record's
            # string values quotes are escaped, so '"system"' is a frame's own word.
            if '"phx_close"' in text or '"system"' in text:
                frame = json.loads(text)
                event = frame.get("event")
                if event in ("phx_close", "system"):
                    payload = frame.get("payload") or {}
                    if event == "phx_close" or payload.get("status") == "error":
                        self.closed_reason = str(payload.get("message") or event)
                    continue
            if on_change is not None and '"postgres_changes"' in text:
                on_change(text, arrived)

    async def _heartbeat(self) -> None:
        while not self.ws.closed:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(Exception):
                await self.send("phoenix", "heartbeat", {})

    async def close(self) -> None:
        """Stop the tasks and close the socket; never raises."""
        for task in (self._beat, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(Exception):
            await self.ws.close()
