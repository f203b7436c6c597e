"""The link model alone: rate, delay, fairness, pipelining, order, loss (no mitmproxy)."""

from __future__ import annotations

import asyncio
import random

import pytest

from devicelab.netshape.link import Channel, Shape


def _run_link(shape: Shape, sends: list[tuple[float, str, int]]) -> dict[str, list[float]]:
    """Send (at, pipe name, size) on one channel; returns each pipe's delivery times."""

    async def main() -> dict[str, list[float]]:
        loop = asyncio.get_running_loop()
        channel = Channel(lambda: shape, random.Random(7))
        arrivals: dict[str, list[float]] = {}
        t0 = loop.time()
        pipes = {}
        for _, name, _ in sends:
            if name not in pipes:
                arrivals[name] = []
                pipes[name] = channel.pipe(
                    lambda data, n=name: arrivals[n].append(loop.time() - t0)
                )
        done = loop.create_future()
        total = sum(size for _, _, size in sends)
        delivered = 0

        for at, name, size in sends:
            await asyncio.sleep(max(0.0, t0 + at - loop.time()))
            pipes[name].send(b"x" * size)
        while delivered < total:
            delivered = sum(p.delivered_total for p in pipes.values())
            await asyncio.sleep(0.005)
        done.cancel()
        return arrivals

    return asyncio.run(main())


def test_rate_and_delay_give_the_ideal_time() -> None:
    shape = Shape(delay_s=0.05, rate=1_000_000)
    arrivals = _run_link(shape, [(0.0, "bulk", 300_000)])
    # 0.3 s of serialization plus 50 ms of propagation.
    assert arrivals["bulk"][-1] == pytest.approx(0.35, abs=0.01)


def test_a_tiny_send_does_not_wait_behind_two_bulk_ones() -> None:
    shape = Shape(delay_s=0.05, rate=500_000)
    sends = [(0.0, "a", 500_000), (0.0, "b", 500_000), (0.1, "tiny", 200)]
    arrivals = _run_link(shape, sends)
    # A FIFO would deliver it after both bulk sends (> 1 s); round robin within a few turns.
    assert arrivals["tiny"][-1] < 0.1 + 0.05 + 0.03
    # The two bulk pipes share the link: both finish near 2 s, not one at 1 s.
    assert arrivals["a"][-1] == pytest.approx(2.05, abs=0.05)
    assert arrivals["b"][-1] == pytest.approx(2.05, abs=0.05)


def test_a_burst_of_small_messages_is_pipelined_not_stacked() -> None:
    shape = Shape(delay_s=0.08, rate=1_250_000)
    arrivals = _run_link(shape, [(0.0, f"m{i}", 100) for i in range(10)])
    for times in arrivals.values():
        assert times[0] == pytest.approx(0.08, abs=0.01)


def test_jitter_never_reorders_a_connection() -> None:
    shape = Shape(delay_s=0.02, rate=2_000_000, jitter_s=0.01)
    seen: list[bytes] = []

    async def main() -> None:
        channel = Channel(lambda: shape, random.Random(1))
        pipe = channel.pipe(seen.append)
        for i in range(200):
            pipe.send(bytes([i]) * 3000)
        while pipe.delivered_total < 200 * 3000:
            await asyncio.sleep(0.01)

    asyncio.run(main())
    joined = b"".join(seen)
    assert [joined[i * 3000] for i in range(200)] == list(range(200))


def test_loss_costs_a_round_trip_per_lost_segment() -> None:
    clean = _run_link(Shape(delay_s=0.01, rate=2_000_000), [(0.0, "p", 200_000)])
    lossy = _run_link(
        Shape(delay_s=0.01, rate=2_000_000, loss=0.05, rtt_s=0.05), [(0.0, "p", 200_000)]
    )
    # About 7 of 50 chunks meet a loss; each stalls the connection for a round trip.
    assert lossy["p"][-1] > clean["p"][-1] + 0.2


def test_every_segment_may_be_lost_however_fast_the_link() -> None:
    # A turn moves a whole megabyte on an unlimited link (12.5 KB at 100 Mbps), and only
    # one loss was drawn per turn: 10 % loss cost a 500 KB transfer one round trip at most.
    lossy = _run_link(Shape(delay_s=0.0, rate=None, loss=0.1, rtt_s=0.05), [(0.0, "p", 500_000)])
    # 343 segments, ~34 lost (sd ~5.6), 50 ms each: ~1.7 s.
    assert 1.0 < lossy["p"][-1] < 2.6


def test_writers_wait_when_the_backlog_is_full() -> None:
    shape = Shape(delay_s=0.0, rate=100_000)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        pipe = Channel(lambda: shape).pipe(lambda data: None)
        pipe.send(b"x" * (shape.backlog_limit() + 50_000))
        start = loop.time()
        await pipe.wait_for_space()
        return loop.time() - start

    # 50 KB over the limit drains in about half a second at 100 KB/s.
    assert asyncio.run(main()) == pytest.approx(0.5, abs=0.1)


def test_an_early_pipe_hands_over_once_serialized_and_says_when_the_bytes_arrive() -> None:
    async def main() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        channel = Channel(lambda: Shape(delay_s=0.08, rate=1_000_000))
        handed: list[float] = []
        pipe = channel.pipe(lambda data: handed.append(loop.time()), early=True)
        t0 = loop.time()
        pipe.send(b"x" * 20_000)  # 20 ms of serialization, then 80 ms on the air
        while pipe.delivered_total < 20_000:
            await asyncio.sleep(0.001)
        return handed[-1] - t0, pipe.delivered_due - t0, pipe.last_arrival - t0

    handed, due, entered = asyncio.run(main())
    assert handed == pytest.approx(0.02, abs=0.006)
    assert due == pytest.approx(0.10, abs=0.006)
    assert entered == pytest.approx(0.0, abs=0.002)


def test_not_before_keeps_bytes_off_the_link_until_then() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        channel = Channel(lambda: Shape(delay_s=0.03, rate=None))
        got = loop.create_future()
        pipe = channel.pipe(lambda data: got.set_result(loop.time()))
        t0 = loop.time()
        pipe.send(b"answer", not_before=t0 + 0.05)
        return await got - t0

    assert asyncio.run(main()) == pytest.approx(0.08, abs=0.006)


def test_since_starts_bytes_when_the_server_sent_them_not_before_the_link_was_free() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        channel = Channel(lambda: Shape(delay_s=0.05, rate=100_000))
        got: list[float] = []
        idle = channel.pipe(lambda data: got.append(loop.time()))
        t0 = loop.time()
        # The proxy took 10 ms to pass on 1 KB the server sent: the link carries it from
        # then (10 ms of serialization, 50 ms on the air): it arrives 50 ms after hand-over.
        idle.send(b"r" * 1000, since=t0 - 0.010)
        while not got:
            await asyncio.sleep(0.001)
        first = got[0] - t0
        # A busy link: 10 KB take it for 100 ms; bytes dated before that cannot jump ahead.
        got.clear()
        t1 = loop.time()
        busy = channel.pipe(lambda data: None)
        busy.send(b"b" * 10_000)
        await asyncio.sleep(0.02)
        idle.send(b"r" * 1000, since=t1)
        while not got:
            await asyncio.sleep(0.001)
        return first, got[0] - t1

    first, second = asyncio.run(main())
    assert first == pytest.approx(0.050, abs=0.004)
    # Round robin from 20 ms on: it shares the link, it never starts before t1 + 20 ms.
    assert second >= 0.02 + 0.01 + 0.05 - 0.002


def test_bytes_are_dated_from_the_server_only_after_it_answered_and_not_far_back() -> None:
    from devicelab.netshape.transport import ConnectionClock

    clock = ConnectionClock(up_due=10.0, up_release=9.9, server_rx=0.0)
    # The device's request is still on the air and the server said nothing since: no date
    # from the server (mitmproxy's own answer waits for the request instead).
    assert clock.server_sent(9.95) is None
    assert clock.answer_floor(9.95) == 10.0
    # The server answered at 10.001: bytes written at 10.003 entered the link then.
    clock.server_rx = 10.001
    assert clock.server_sent(10.003) == 10.001
    assert clock.answer_floor(10.003) is None
    # mitmproxy's handling after an idle spell (5-10 ms) is not the link's either ...
    assert clock.server_sent(10.013) == 10.001
    # ... but a proxy that stalled for a second is not hidden: 20 ms back at most.
    assert clock.server_sent(11.0) == pytest.approx(10.98)


def test_a_precise_timer_cancelled_between_its_two_steps_never_calls_back() -> None:
    from devicelab.netshape.link import PreciseTimer

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        called: list[str] = []
        kept = PreciseTimer(loop.time() + 0.03, lambda: called.append("kept"))
        cancelled = PreciseTimer(loop.time() + 0.03, lambda: called.append("cancelled"))
        first_step = cancelled._handle
        while cancelled._handle is first_step:  # until its first step ran (3 ms early)
            await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0.02)
        assert kept is not None
        return called

    assert asyncio.run(main()) == ["kept"]


def test_a_device_that_is_gone_stops_taking_its_links_time() -> None:
    # A download the device reset kept crossing its link: the same device's next
    # download on another connection took +20 % at 4g (found by an outside tester).
    from devicelab.netshape.transport import ShapedWriter

    class Socket:
        def __init__(self) -> None:
            self.closing = False
            self.received = 0

        def is_closing(self) -> bool:
            return self.closing

        def write(self, data: bytes) -> None:
            self.received += len(data)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        channel = Channel(lambda: Shape(rate=100_000))
        gone, other = Socket(), Socket()
        bulk = ShapedWriter(gone, channel)  # type: ignore[arg-type]
        small = ShapedWriter(other, channel)  # type: ignore[arg-type]
        bulk.write(b"x" * 200_000)  # 2 s of the link
        await asyncio.sleep(0.1)
        gone.closing = True  # the device reset that connection
        start = loop.time()
        small.write(b"y" * 20_000)  # 0.2 s alone, 0.4 s sharing the link with the bulk
        while other.received < 20_000:
            await asyncio.sleep(0.002)
        assert bulk.pipe.aborted and bulk.pipe.pending_bytes == 0
        return loop.time() - start

    assert asyncio.run(main()) == pytest.approx(0.2, abs=0.06)
