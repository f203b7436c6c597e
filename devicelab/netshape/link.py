"""The emulated link: one-way delay, bandwidth, jitter and loss, shared fairly by connections.

A client (one source address) has two ``Channel`` objects, its downlink and its uplink.
Every TCP connection of that client owns one ``Pipe`` in each channel. Bytes written into a
pipe are *serialized* by the channel at its bandwidth, round robin over the pipes that have
bytes waiting (so a tiny response never waits behind two bulk downloads as it would in a
FIFO), then *propagate* for the one-way delay before they are delivered. Serialization and
propagation overlap, as on a real link: ten small WebSocket messages sent at once each
arrive about one one-way delay later, they do not stack up.

Loss model (TCP carries everything the proxy sees, HTTP and WebSocket alike, so nothing is
ever dropped for good): every 1460-byte segment is lost with probability ``loss``; a lost
segment is sent again (its bandwidth is charged twice) and arrives one round trip later,
and its connection sends nothing more until then (loss recovery stalls that connection
for a round trip; other connections keep the link). So a WebSocket message that meets a
loss arrives one round trip late, and a download pays one round trip per loss. Jitter adds
a normal variation (standard deviation ``jitter_s``) to each chunk's delay, never
reordering a connection's bytes.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devicelab.models.network import NetworkProfile

__all__ = ["SEGMENT_BYTES", "Channel", "Pipe", "PreciseTimer", "Shape", "shapes_of"]

SEGMENT_BYTES = 1460
# The scheduler commits bytes this far ahead of the clock: fewer wake-ups, and a newcomer
# waits at most this long before it takes its turn.
_LOOKAHEAD_S = 0.002
# One turn of the round robin moves about this much link time per pipe, but never less
# than a segment: small enough that a tiny response is not stuck behind big turns.
_TURN_S = 0.001
# The scheduler runs in virtual time: when it wakes late (a busy CPU), it serializes the
# bytes it should have serialized meanwhile (each no earlier than it arrived), up to this
# far back, so late wake-ups do not lower the bandwidth.
_CATCH_UP_S = 0.25
# asyncio rounds a timer's wait up to the next millisecond (epoll), so deliveries wake this
# much before they are due and hand over what is due within it: on time on average.
EARLY_S = 0.0005
# A timer due after an idle spell fires about a millisecond late (the CPU slept: several
# on a busy VM), one set right after a wake-up within ~0.2 ms: a long wait wakes this much
# before its time and then sets the exact timer.
_PREWAKE_S = 0.003


class PreciseTimer:
    """Calls ``callback`` at loop time ``when`` (at most ``EARLY_S`` early), in two steps
    when the wait is long (see ``_PREWAKE_S``); ``cancel`` stops whichever step is pending."""

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._callback = callback
        self._target = when - EARLY_S
        if self._target - self._loop.time() > 2 * _PREWAKE_S:
            self._handle = self._loop.call_at(self._target - _PREWAKE_S, self._exact)
        else:
            self._handle = self._loop.call_at(self._target, callback)

    def _exact(self) -> None:
        self._handle = self._loop.call_at(self._target, self._callback)

    def cancel(self) -> None:
        """Do not call back."""
        self._handle.cancel()


@dataclass(frozen=True)
class Shape:
    """One direction of a link: delay and jitter in seconds, rate in bytes per second."""

    delay_s: float = 0.0
    rate: float | None = None
    jitter_s: float = 0.0
    loss: float = 0.0
    rtt_s: float = 0.0

    @property
    def transparent(self) -> bool:
        """True when the link changes nothing (no delay, no limit, no jitter, no loss)."""
        return self.delay_s == 0 and self.rate is None and self.jitter_s == 0 and self.loss == 0

    def quantum(self) -> int:
        """Bytes one pipe moves in one round-robin turn."""
        if self.rate is None:
            return 1 << 20
        return max(SEGMENT_BYTES, int(self.rate * _TURN_S))

    def backlog_limit(self) -> int:
        """Bytes a pipe may hold (waiting plus in flight) before its writer must wait.

        Twice the bandwidth-delay product plus a margin, so a single flow can fill the link.
        """
        if self.rate is None:
            return 8 << 20
        return max(256 << 10, int(2 * self.rate * (self.delay_s + 0.1)))


def shapes_of(profile: NetworkProfile | None) -> tuple[Shape, Shape]:
    """The (downlink, uplink) shapes of ``profile``; transparent for None or unshaped.

    The profile's jitter is the variation of the round trip: each direction gets jitter/√2.
    """
    if profile is None or not profile.shaped or profile.offline:
        return Shape(), Shape()
    jitter = profile.jitter_ms / 1000 / math.sqrt(2)
    loss, rtt = profile.loss_pct / 100, profile.rtt / 1000
    down = Shape((profile.down_delay_ms or 0) / 1000, profile.down_bytes_per_s, jitter, loss, rtt)
    up = Shape((profile.up_delay_ms or 0) / 1000, profile.up_bytes_per_s, jitter, loss, rtt)
    return down, up


class Pipe:
    """One connection's bytes in one direction of a link.

    ``deliver`` receives the bytes once they have crossed the link. Offsets count bytes:
    ``queued_total`` handed in so far, ``delivered_total`` handed out so far.
    """

    def __init__(
        self, channel: Channel, deliver: Callable[[bytes], None], *, early: bool = False
    ) -> None:
        self.channel = channel
        self._deliver_cb = deliver
        # An early pipe hands its bytes over once serialized, before they propagate:
        # ``delivered_due`` then says when they reach the far end, and the receiver holds
        # them until then (the proxy parses a request while it is still on the air).
        self.early = early
        self.delivered_due = 0.0
        self.pending: deque[tuple[bytes, float]] = deque()  # (bytes, arrival time)
        self.pending_bytes = 0
        self.in_flight_bytes = 0
        self.queued_total = 0
        self.delivered_total = 0
        self.last_arrival = 0.0  # when the bytes being delivered entered the link
        self._last_due = 0.0
        self._hold_until = 0.0  # loss recovery: no serialization turn before this
        self._flight: deque[tuple[float, bytes, float, float]] = deque()
        self._watchers: list[tuple[int, Callable[[], None]]] = []
        self._space = asyncio.Event()
        self._space.set()
        self.aborted = False

    @property
    def backlog(self) -> int:
        """Bytes handed in but not delivered yet."""
        return self.pending_bytes + self.in_flight_bytes

    def send(
        self, data: bytes, not_before: float | None = None, since: float | None = None
    ) -> None:
        """Hand ``data`` to the link; it is delivered later, in order.

        ``not_before`` (loop time) keeps it off the link until then: an answer the proxy
        makes itself to bytes still on the air leaves when they would have arrived.
        ``since`` (loop time, not later than now) says the bytes entered the link earlier
        than they were handed in: the server sent them then, and the proxy's own handling
        since is not the link's (it takes a link turn no earlier than the link was free).
        """
        if self.aborted or not data:
            return
        self.queued_total += len(data)
        self.channel.submit(self, data, not_before, since)
        if self.backlog > self.channel.shape().backlog_limit():
            self._space.clear()

    async def wait_for_space(self) -> None:
        """Return once the backlog is under the link's limit (backpressure for writers)."""
        while not self._space.is_set() and not self.aborted:
            await self._space.wait()

    def when_delivered(self, offset: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once ``offset`` bytes have been delivered (now if already)."""
        if self.delivered_total >= offset or self.aborted:
            callback()
        else:
            self._watchers.append((offset, callback))

    def after_all(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything handed in so far has been delivered."""
        self.when_delivered(self.queued_total, callback)

    def abort(self) -> None:
        """Drop everything not delivered yet and release anyone waiting."""
        self.aborted = True
        self.pending.clear()
        self.pending_bytes = 0
        self._space.set()
        watchers, self._watchers = self._watchers, []
        for _, callback in watchers:
            callback()

    def _take(self, limit: int, until: float) -> tuple[bytes, float]:
        """Up to ``limit`` bytes that arrived by ``until``, across write boundaries, and
        when the last of them arrived: one turn carries a whole quantum (a response's
        headers and body together), as one packet on the wire would."""
        parts: list[bytes] = []
        size, arrival = 0, 0.0
        while self.pending and size < limit:
            head, when = self.pending[0]
            if parts and when > until:
                break
            room = limit - size
            if len(head) <= room:
                self.pending.popleft()
            else:
                self.pending[0] = (head[room:], when)
                head = head[:room]
            parts.append(head)
            size += len(head)
            arrival = max(arrival, when)
        self.pending_bytes -= size
        return (parts[0] if len(parts) == 1 else b"".join(parts)), arrival

    def _ready_at(self) -> float:
        """When the head of the queue may start serializing (arrived, not on hold)."""
        return max(self.pending[0][1], self._hold_until)

    def _schedule(self, at: float, chunk: bytes, arrival: float, due: float) -> None:
        # One timer per pipe at a time: equal deadlines in asyncio's heap are not FIFO.
        self.in_flight_bytes += len(chunk)
        self._flight.append((at, chunk, arrival, due))
        if len(self._flight) == 1:
            PreciseTimer(at, self._flush)

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time() + EARLY_S
        while self._flight and self._flight[0][0] <= now and not self.aborted:
            _, chunk, arrival, due = self._flight.popleft()
            self._deliver(chunk, arrival, due)
        if self.aborted:
            self._flight.clear()
        elif self._flight:
            PreciseTimer(self._flight[0][0], self._flush)

    def _deliver(self, chunk: bytes, arrival: float, due: float) -> None:
        self.in_flight_bytes -= len(chunk)
        self.delivered_total += len(chunk)
        self.last_arrival = arrival
        self.delivered_due = due
        self._deliver_cb(chunk)
        if self._watchers:
            ready = [w for w in self._watchers if w[0] <= self.delivered_total]
            if ready:
                self._watchers = [w for w in self._watchers if w[0] > self.delivered_total]
                for _, callback in ready:
                    callback()
        if not self._space.is_set() and self.backlog <= self.channel.shape().backlog_limit():
            self._space.set()


class Channel:
    """One direction of one client's link, shared fairly (round robin) by its pipes.

    ``shape`` is read on every decision, so a profile switch applies at once to bytes that
    have not been serialized yet.
    """

    def __init__(self, shape: Callable[[], Shape], rng: random.Random | None = None) -> None:
        self.shape = shape
        self._rng = rng or random.Random()
        self._active: deque[Pipe] = deque()
        self._busy_until = 0.0
        self._task: asyncio.Task[None] | None = None

    def pipe(self, deliver: Callable[[bytes], None], *, early: bool = False) -> Pipe:
        """A new pipe on this channel delivering to ``deliver`` (see ``Pipe.early``)."""
        return Pipe(self, deliver, early=early)

    def submit(
        self,
        pipe: Pipe,
        data: bytes,
        not_before: float | None = None,
        since: float | None = None,
    ) -> None:
        """Queue ``data`` of ``pipe`` for serialization (or deliver it now on a clear link),
        not before ``not_before`` (loop time) when given, as if it arrived at ``since``
        (loop time, not later than now) when given (see ``Pipe.send``)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        shape = self.shape()
        if shape.transparent and not pipe.pending and not pipe.in_flight_bytes:
            # Unshaped fast path: no timers, no copies.
            pipe.in_flight_bytes += len(data)
            pipe._deliver(data, now, now)
            return
        if not_before is not None:
            arrival = max(now, not_before)
        elif since is not None:
            arrival = min(now, since)
        else:
            arrival = now
        pipe.pending.append((data, arrival))
        pipe.pending_bytes += len(data)
        if pipe.pending_bytes == len(data):
            # A pipe that was idle takes the next turn (as fq_codel serves new flows), so a
            # small request overtakes the bulk transfers already queued.
            self._active.appendleft(pipe)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    def _commit(self, pipe: Pipe, chunk: bytes, arrival: float, shape: Shape, now: float) -> None:
        if shape.rate is not None:
            self._busy_until += len(chunk) / shape.rate
        due = self._busy_until + shape.delay_s
        if shape.jitter_s:
            due += self._rng.gauss(0.0, shape.jitter_s)
        if shape.loss:
            # Each segment of the chunk is drawn (a turn moves many on a fast link, a whole
            # megabyte on an unlimited one): every loss is resent and costs one round trip.
            segments = math.ceil(len(chunk) / SEGMENT_BYTES)
            lost = sum(1 for _ in range(segments) if self._rng.random() < shape.loss)
            if lost:
                if shape.rate is not None:
                    self._busy_until += lost * min(len(chunk), SEGMENT_BYTES) / shape.rate
                due += lost * max(shape.rtt_s, 0.001)
                pipe._hold_until = self._busy_until + lost * max(shape.rtt_s, 0.001)
        # In-order delivery per connection, whatever the jitter drew.
        due = max(due, pipe._last_due, now)
        pipe._last_due = due
        at = max(due - shape.delay_s, now) if pipe.early else due
        pipe._schedule(at, chunk, arrival, due)

    def _next_ready(self) -> Pipe | None:
        """The next pipe in round-robin order that may send at the link's virtual time."""
        for _ in range(len(self._active)):
            pipe = self._active[0]
            if pipe.aborted or not pipe.pending:
                self._active.popleft()
            elif pipe._ready_at() > self._busy_until:
                self._active.rotate(-1)
            else:
                return pipe
        return None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # The link was idle: it takes up the bytes from when they arrived (a backdated
        # arrival, see ``Pipe.send``, may be a little in the past), never before it was free.
        heads = [p.pending[0][1] for p in self._active if p.pending]
        self._busy_until = max(self._busy_until, min([loop.time(), *heads]))
        while self._active:
            now = loop.time()
            shape = self.shape()
            self._busy_until = max(self._busy_until, now - _CATCH_UP_S)
            quantum = shape.quantum()
            wake: float | None = None
            while self._busy_until <= now + _LOOKAHEAD_S:
                pipe = self._next_ready()
                if pipe is None:
                    if not self._active:
                        break
                    # Nothing may send yet: the link idles until the next arrival or the
                    # end of a loss-recovery hold.
                    start = min(p._ready_at() for p in self._active)
                    if start > now + _LOOKAHEAD_S:
                        wake = start
                        break
                    self._busy_until = max(self._busy_until, start)
                    continue
                chunk, arrival = pipe._take(quantum, self._busy_until)
                if pipe.pending:
                    self._active.rotate(-1)
                else:
                    self._active.popleft()
                self._commit(pipe, chunk, arrival, shape, now)
            if not self._active:
                break
            if wake is None:
                wake = self._busy_until - _LOOKAHEAD_S / 2
            await asyncio.sleep(max(0.0, wake - now))
