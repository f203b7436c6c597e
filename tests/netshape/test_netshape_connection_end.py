"""The end of a connection (real mitmproxy, real aiohttp servers on loopback): the proxy's
server sockets are closed, and a client's link outlives a closed connection until that
connection's queued bytes have crossed it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import psutil

from devicelab.netshape.proxy import ShapedProxy
from devicelab.testing.upstream import Upstream


def _close_wait_to(port: int) -> int:
    """This process's TCP sockets to ``port`` on loopback left in CLOSE-WAIT: the peer
    closed, this side never did (the in-process proxy's sockets are this process's)."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_CLOSE_WAIT
    )


def test_connection_close_leaves_no_server_socket_in_close_wait(make_profile: Any) -> None:
    # mitmproxy's server handler, cancelled while it reported the server's close, skipped
    # its own close: 20 of 20 such sockets stayed in CLOSE-WAIT for good.
    async def one(proxy: str, base: str) -> int:
        connector = aiohttp.TCPConnector(force_close=True)  # "Connection: close"
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{base}/bytes?n=200000", proxy=proxy) as response,
        ):
            return len(await response.read())

    async def main(proxy: str, base: str) -> list[int]:
        return list(await asyncio.gather(*(one(proxy, base) for _ in range(20))))

    with Upstream() as server, ShapedProxy(make_profile(40, 20_000, 5_000)) as proxy:
        assert asyncio.run(main(proxy.url, server.base)) == [200_000] * 20
        port = int(server.base.rsplit(":", 1)[1])
        deadline = time.monotonic() + 3
        while (left := _close_wait_to(port)) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert left == 0


def test_a_closed_connections_queued_bytes_share_the_link_with_a_new_one(
    upstream: Any, make_profile: Any
) -> None:
    # mitmproxy lets a "Connection: close" connection go once the server's last bytes are
    # on the link, up to its backlog (256 KB here, ~0.5 s) before they reach the device.
    # The link went with it: a new connection of the same client got a fresh link, and
    # the client twice the profile's rate.
    rate = 500_000  # bytes per second: 4000 kbps
    first_size, second_size, tail = 768 << 10, 200_000, 200_000

    async def main(proxy: str) -> float:
        closing = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=closing) as first,
            aiohttp.ClientSession() as second,
            first.get(f"{upstream.base}/bytes?n={first_size}", proxy=proxy) as response,
        ):
            received = 0
            while received < first_size - tail:  # the server's last bytes are on the link
                received += len(await response.content.read(1 << 16))
            start, remaining = time.perf_counter(), first_size - received

            async def get_second() -> float:
                async with second.get(f"{upstream.base}/bytes?n={second_size}", proxy=proxy) as r:
                    assert len(await r.read()) == second_size
                return time.perf_counter()

            late = asyncio.ensure_future(get_second())
            received += len(await response.read())
            assert received == first_size
            first_end = time.perf_counter()
            second_end = await late
        return (remaining + second_size) / (max(first_end, second_end) - start)

    with ShapedProxy(make_profile(40, rate * 8 / 1000, 4000)) as proxy:
        achieved = asyncio.run(main(proxy.url))
    # One link: the two together get the link's rate, not twice it (2x before).
    assert achieved < rate * 1.25, achieved
