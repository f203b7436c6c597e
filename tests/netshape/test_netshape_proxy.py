"""A real mitmproxy with the NetShape addon, a real aiohttp upstream, real clients."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from devicelab.netshape.proxy import ShapedProxy

RTT = 0.1
# 8 Mbps down, 4 Mbps up: 1 MB down in 1 s, 500 KB up in 1 s.
DOWN, UP = 1_000_000, 500_000


@pytest.fixture(scope="module")
def shaped(make_profile: Any) -> Any:
    # Its own process, as devices see it: no GIL shared with this test's client and server.
    profile = make_profile(RTT * 1000, DOWN * 8 / 1000, UP * 8 / 1000)
    with ShapedProxy(profile, mode="subprocess") as proxy:
        yield proxy


async def _get(session: aiohttp.ClientSession, url: str, proxy: str) -> float:
    start = time.perf_counter()
    async with session.get(url, proxy=proxy) as response:
        assert response.status == 200
        await response.read()
    return time.perf_counter() - start


@pytest.mark.slow
def test_download_upload_and_tiny_request_take_their_ideal_time(shaped: Any, upstream: Any) -> None:
    async def main() -> tuple[float, float, float]:
        async with aiohttp.ClientSession() as s:
            await _get(s, f"{upstream.base}/bytes?n=1", shaped.url)  # warm the connection
            tiny = min([await _get(s, f"{upstream.base}/bytes?n=1", shaped.url) for _ in range(3)])
            down = await _get(s, f"{upstream.base}/bytes?n={DOWN}", shaped.url)
            start = time.perf_counter()
            async with s.post(f"{upstream.base}/sink", data=b"u" * UP, proxy=shaped.url) as r:
                assert await r.text() == str(UP)
            return tiny, down, time.perf_counter() - start

    tiny, down, up = asyncio.run(main())
    upload = shaped.records()[-1]
    assert (upload.method, upload.bytes_up, upload.status) == ("POST", UP, 200)
    assert upload.end is not None and upload.end - upload.start == pytest.approx(up, abs=0.03)
    assert RTT <= tiny < RTT + 0.04
    assert down == pytest.approx(RTT + 1.0, rel=0.1)
    assert up == pytest.approx(RTT + 1.0, rel=0.1)


@pytest.mark.slow
def test_a_tiny_request_is_not_stuck_behind_two_downloads(shaped: Any, upstream: Any) -> None:
    async def main() -> tuple[float, float, float]:
        async with aiohttp.ClientSession() as s:

            async def tiny_later() -> float:
                await asyncio.sleep(0.4)
                return await _get(s, f"{upstream.base}/bytes?n=10", shaped.url)

            bulk = f"{upstream.base}/bytes?n={DOWN}"
            a, b, tiny = await asyncio.gather(
                _get(s, bulk, shaped.url), _get(s, bulk, shaped.url), tiny_later()
            )
            return a, b, tiny

    a, b, tiny = asyncio.run(main())
    assert tiny < 2 * RTT + 0.1  # a FIFO would make it wait for both downloads (~1.6 s)
    # The two downloads share the downlink fairly: both end near RTT + 2 s.
    assert a == pytest.approx(RTT + 2.0, rel=0.1)
    assert b == pytest.approx(RTT + 2.0, rel=0.1)


def test_a_websocket_burst_arrives_one_delay_later_not_stacked(shaped: Any, upstream: Any) -> None:
    async def main() -> list[float]:
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(f"{upstream.base}/ws", proxy=shaped.url) as ws,
        ):
            await ws.send_str("burst 10")
            lags = []
            for _ in range(10):
                msg = await ws.receive(timeout=5)
                lags.append(time.time() - float(msg.data.split()[1]) / 1000)
            return lags

    lags = asyncio.run(main())
    assert len(lags) == 10
    for lag in lags:
        assert RTT / 2 - 0.002 <= lag < RTT / 2 + 0.02


def test_profile_switch_offline_and_records(shaped: Any, upstream: Any, make_profile: Any) -> None:
    async def tiny() -> float:
        async with aiohttp.ClientSession() as s:
            return await _get(s, f"{upstream.base}/bytes?n=5", shaped.url)

    async def ws_cut_by_offline() -> aiohttp.WSMsgType:
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(f"{upstream.base}/ws", proxy=shaped.url) as ws,
        ):
            await ws.send_str("ping")
            assert (await ws.receive(timeout=5)).data == "ping"
            shaped.go_offline(0.5)
            return (await ws.receive(timeout=5)).type

    try:
        shaped.set_profile(make_profile(20, None, None))
        assert min(asyncio.run(tiny()) for _ in range(3)) < 0.06
        assert asyncio.run(ws_cut_by_offline()) in (
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )
        with pytest.raises(aiohttp.ClientError):
            asyncio.run(tiny())  # refused while offline
        time.sleep(0.6)
        assert min(asyncio.run(tiny()) for _ in range(3)) < 0.06  # back online
    finally:
        shaped.go_online()
        shaped.set_profile(make_profile(RTT * 1000, DOWN * 8 / 1000, UP * 8 / 1000))

    last = shaped.records()[-3:]  # the three requests after coming back online
    for record in last:
        assert record.url.endswith("/bytes?n=***") and record.status == 200  # no query values
        assert record.first_byte is not None and record.end is not None
        assert record.start < record.first_byte <= record.end
        assert (record.bytes_up, record.bytes_down) == (0, 5)
    fastest = min(r.first_byte - r.start for r in last if r.first_byte is not None)
    assert fastest == pytest.approx(0.02, abs=0.015)


def test_offline_until_told_then_online_through_the_control_endpoint(
    shaped: Any, upstream: Any
) -> None:
    # In subprocess mode go_online() is itself a request through the proxy: the offline
    # link must still let the control endpoint answer, and nothing else.
    async def tiny() -> float:
        async with aiohttp.ClientSession() as s:
            return await _get(s, f"{upstream.base}/bytes?n=5", shaped.url)

    shaped.go_offline()
    try:
        with pytest.raises(aiohttp.ClientError):
            asyncio.run(tiny())
        assert shaped.status().offline is True
    finally:
        shaped.go_online()
    assert asyncio.run(tiny()) >= RTT


def test_a_websocket_url_in_the_request_line_is_taken(shaped: Any, upstream: Any) -> None:
    # aiohttp, like WebKit on iOS behind a manual Wi-Fi proxy, sends "GET ws://host/ws";
    # plain mitmproxy answers 400 and the app's realtime socket never opens.
    url = f"{upstream.base}/ws".replace("http://", "ws://")

    async def main() -> float:
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(url, proxy=shaped.url) as ws,
        ):
            await ws.send_str("burst 1")
            msg = await ws.receive(timeout=5)
            return time.time() - float(msg.data.split()[1]) / 1000

    lag = asyncio.run(main())
    assert RTT / 2 - 0.002 <= lag < RTT / 2 + 0.02  # shaped like any WebSocket message


@pytest.mark.parametrize("busy", ["blocked", "awaiting"])
def test_a_request_sent_on_connect_is_timed_from_the_accept_not_from_the_handover(
    upstream: Any, make_profile: Any, monkeypatch: pytest.MonkeyPatch, busy: str
) -> None:
    # After an idle spell mitmproxy hands a new connection to the addon ~10 ms after it
    # accepted it; the request the client sent at once was waiting all along, and that wait
    # is not the link's. Here the handover takes 45 ms (under the 50 ms the addon credits
    # at most), with mitmproxy's loop blocked (the request stays in the socket) or running
    # (asyncio reads it into its buffer). Timed from the handover, every try would take
    # RTT + 45 ms; the best of five leaves a loaded machine's scheduling 30 ms (a CI run
    # with both workers busy saw 46 ms over the RTT with a 60 ms handover, 10 of them past
    # the credit, at best of three).
    import socket

    from devicelab.netshape.addon import NetShape

    handover = NetShape.client_connected

    async def slow_handover(self: NetShape, client: Any) -> None:
        if busy == "blocked":
            time.sleep(0.045)
        else:
            await asyncio.sleep(0.045)
        handover(self, client)

    monkeypatch.setattr(NetShape, "client_connected", slow_handover)
    host_port = upstream.base.removeprefix("http://")
    request = (
        f"GET {upstream.base}/bytes?n=1 HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n"
    ).encode()
    with ShapedProxy(make_profile(RTT * 1000, None, None)) as proxy:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            with socket.create_connection((proxy.host, proxy.port)) as client:
                client.sendall(request)
                while client.recv(65536):
                    pass
            times.append(time.perf_counter() - start)
    assert RTT <= min(times) < RTT + 0.03, times
