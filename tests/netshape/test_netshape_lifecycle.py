"""ShapedProxy's lifecycle: allow-list, ports, options, subprocess mode (real mitmproxy)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devicelab.errors import BadInput, EnvironmentProblem
from devicelab.netshape.proxy import ShapedProxy


async def _get(session: aiohttp.ClientSession, url: str, proxy: str) -> float:
    start = time.perf_counter()
    async with session.get(url, proxy=proxy) as response:
        assert response.status == 200
        await response.read()
    return time.perf_counter() - start


def test_a_client_outside_the_allow_list_is_refused(
    upstream: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="devicelab.netshape")

    async def main(url: str) -> None:
        async with aiohttp.ClientSession() as s:
            await _get(s, f"{upstream.base}/bytes?n=1", url)

    with ShapedProxy(None, allow=["10.0.0.0/8"]) as proxy:
        with pytest.raises(aiohttp.ClientError):
            asyncio.run(main(proxy.url))
        for _ in range(199):  # a client that retries all night is said once a hundred times
            with socket.create_connection((proxy.host, proxy.port)) as retry:
                retry.recv(1)
    refused = [r.getMessage() for r in caplog.records if "refused client" in r.getMessage()]
    assert refused == [
        "refused client 127.0.0.1: not in the allow-list (10.0.0.0/8)",
        "refused client 127.0.0.1: not in the allow-list (10.0.0.0/8) (100 times)",
        "refused client 127.0.0.1: not in the allow-list (10.0.0.0/8) (200 times)",
    ]


def test_port_zero_then_a_restart_on_the_same_port(upstream: Any) -> None:
    async def main(url: str) -> None:
        async with aiohttp.ClientSession() as s:
            await _get(s, f"{upstream.base}/bytes?n=1", url)

    with ShapedProxy(None, port=0) as first:
        port = first.port
        assert port > 0
        asyncio.run(main(first.url))
        unshaped = first.records()[-1]  # records are kept without shaping too
        assert unshaped.first_byte is not None and unshaped.end is not None
    with ShapedProxy(None, port=port) as second:
        asyncio.run(main(second.url))
        assert str(second.ca_cert_path).endswith("mitmproxy-ca-cert.pem")
        assert second.ca_cert_path.exists()
        with pytest.raises(EnvironmentProblem, match=r"cannot listen|another in-process"):
            ShapedProxy(None, port=port).start()


def test_a_restarted_proxy_is_online_with_no_records_of_its_last_start(upstream: Any) -> None:
    # In thread mode it stayed offline (every request dropped) and kept the old flows.
    async def main(url: str) -> None:
        async with aiohttp.ClientSession() as s:
            await _get(s, f"{upstream.base}/bytes?n=1", url)

    proxy = ShapedProxy(None, port=0, mode="thread").start()
    try:
        asyncio.run(main(proxy.url))
        proxy.go_offline()
        proxy.stop()
        proxy.start()
        assert (proxy.status().offline, proxy.records()) == (False, [])
        asyncio.run(main(proxy.url))
        assert len(proxy.records()) == 1
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("::", "http://[::1]:8080"),
        ("::1", "http://[::1]:8080"),
    ],
)
def test_the_url_is_one_a_local_client_can_use(host: str, url: str) -> None:
    assert ShapedProxy(None, host=host, port=8080).url == url


def test_bad_options_are_bad_input(make_profile: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devicelab.netshape")
    with pytest.raises(BadInput, match="netshape_allow"):
        ShapedProxy(make_profile(60, None, None), allow=["not-a-network"]).start()
    # Nothing was applied: the profile given beside the bad allow-list neither took effect
    # nor was reported as switched on and then off again.
    assert "network profile" not in caplog.text
    with pytest.raises(BadInput):
        ShapedProxy(None, port=70000)


def test_the_control_endpoint_switches_to_a_named_network(upstream: Any, make_profile: Any) -> None:
    slow = make_profile(150, None, None)

    async def switch(session: aiohttp.ClientSession, proxy: str, name: str) -> tuple[int, Any]:
        async with session.post(
            "http://netshape.devicelab/profile", data=name, proxy=proxy
        ) as response:
            return response.status, await response.json()

    async def go(proxy: str) -> tuple[float, float, tuple[int, Any]]:
        async with aiohttp.ClientSession() as s:
            tiny = f"{upstream.base}/bytes?n=1"
            before = min([await _get(s, tiny, proxy) for _ in range(3)])
            assert await switch(s, proxy, "slow") == (200, {"ok": True})
            after = min([await _get(s, tiny, proxy) for _ in range(3)])
            return before, after, await switch(s, proxy, "warp"), await switch(s, proxy, "")

    with ShapedProxy(make_profile(30, None, None), networks={"slow": slow}) as proxy:
        before, after, unknown, empty = asyncio.run(go(proxy.url))
        # A POST with no body (curl -X POST) is refused, not taken as "no shaping".
        assert proxy.addon.profile == slow
        assert asyncio.run(_post_profile(proxy.url, "none")) == 200
        assert proxy.addon.profile is None
    # 2 ms under the RTT is the self-check's own tolerance (a CI run read 29.8 ms for 30).
    assert 0.028 <= before < 0.09 and 0.148 <= after < 0.21
    assert unknown[0] == 400 and "known: slow" in unknown[1]["error"]
    assert empty[0] == 400 and "'none' for no shaping" in empty[1]["error"]


async def _post_profile(proxy: str, body: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post("http://netshape.devicelab/profile", data=body, proxy=proxy) as response,
    ):
        return response.status


_PARENT = """
import sys, time
from devicelab.netshape.proxy import ShapedProxy
proxy = ShapedProxy(None, mode="subprocess").start()
print(proxy._process.pid, proxy.port, flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_subprocess_proxy_stops_when_its_parent_is_killed() -> None:
    # SIGKILL (or a crash) runs no teardown: the proxy itself notices and stops, so no
    # orphan keeps its port (two did, after a farm killed in a test).
    import os
    import signal
    import socket
    import subprocess
    import sys

    import psutil

    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid, port = (int(v) for v in parent.stdout.readline().split())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        try:
            psutil.Process(pid).wait(timeout=10)
        except psutil.NoSuchProcess:
            pass  # already gone
        except psutil.TimeoutExpired:
            psutil.Process(pid).kill()
            pytest.fail("the proxy outlived its parent")
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))  # its port is free again
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()


@pytest.mark.slow
def test_subprocess_mode_is_controlled_through_its_endpoint(
    upstream: Any, make_profile: Any
) -> None:
    async def tiny(url: str) -> float:
        async with aiohttp.ClientSession() as s:
            return await _get(s, f"{upstream.base}/bytes?n=1", url)

    with ShapedProxy(make_profile(60, None, None), mode="subprocess") as proxy:
        assert 0.06 <= min(asyncio.run(tiny(proxy.url)) for _ in range(3)) < 0.12
        proxy.set_profile(make_profile(150, None, None))
        assert 0.15 <= min(asyncio.run(tiny(proxy.url)) for _ in range(3)) < 0.21
        records = proxy.records()
        assert [r.status for r in records][-2:] == [200, 200]
        proxy.go_offline(0.6)
        with pytest.raises(aiohttp.ClientError):
            asyncio.run(tiny(proxy.url))
        time.sleep(0.7)
        assert asyncio.run(tiny(proxy.url)) >= 0.15


def test_https_is_intercepted_and_shaped_with_the_proxy_ca(
    self_signed_tls: ssl.SSLContext, make_profile: Any
) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="secret")

    async def main(proxy: ShapedProxy) -> tuple[float, float]:
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed_tls)
        await site.start()
        url = f"https://127.0.0.1:{runner.addresses[0][1]}/"
        trust = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as s:
                times = []
                for _ in range(2):
                    start = time.perf_counter()
                    async with s.get(url, proxy=proxy.url) as response:
                        assert await response.text() == "secret"
                    times.append(time.perf_counter() - start)
                return times[0], times[1]
        finally:
            await runner.cleanup()

    with ShapedProxy(make_profile(100, None, None), verify_upstream=False) as proxy:
        first, again = asyncio.run(main(proxy))
    # CONNECT, the TLS handshake and the request each cross the link: 3 round trips.
    assert first >= 0.3
    assert 0.1 <= again < 0.16  # the tunnel stays open: one round trip


def test_websocket_history_stays_bounded(upstream: Any) -> None:
    flows: list[Any] = []

    class Keep:
        def websocket_start(self, flow: Any) -> None:
            flows.append(flow)

    async def main(url: str) -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(f"{upstream.base}/ws", proxy=url) as ws,
        ):
            for i in range(40):
                await ws.send_str(f"echo {i}")
                assert (await ws.receive(timeout=5)).data == f"echo {i}"
            counts.append(proxy._call(lambda: len(flows[0].websocket.messages)))
            # Big messages: bounded in bytes too (~1 MB), the newest always kept.
            for i in range(4):
                big = f"echo {i} " + "x" * 600_000
                await ws.send_str(big)
                assert (await ws.receive(timeout=5)).data == big
            history = proxy._call(lambda: list(flows[0].websocket.messages))
            counts.append(len(history))
            sizes.append(sum(len(m.content) for m in history))
        await asyncio.sleep(0.3)  # the close reaches the proxy

    counts: list[int] = []
    sizes: list[int] = []
    with ShapedProxy(None, ws_history=10) as proxy:
        proxy._call(lambda: proxy._master.addons.add(Keep()))
        asyncio.run(main(proxy.url))
        left = proxy._call(lambda: len(flows[0].websocket.messages))
    assert counts[0] <= 10  # 80 messages went through
    assert 1 <= counts[1] <= 2 and sizes[0] <= (1 << 20) + 600_010
    assert left == 0  # a closed flow keeps no messages (freed without waiting for the GC)


def test_the_server_sees_a_request_one_uplink_delay_later_and_never_if_cut_on_the_air(
    upstream: Any, make_profile: Any
) -> None:
    # mitmproxy gets the bytes as soon as they are serialized (to parse them while they
    # propagate), so this checks that what it sends on is held for the uplink delay, and
    # dropped when the link goes offline before they would have arrived.
    async def send(url: str, tag: str) -> float:
        async with aiohttp.ClientSession() as s:
            sent = time.time()
            async with s.get(f"{upstream.base}/bytes?n=1&tag={tag}", proxy=url) as response:
                await response.read()
            return sent

    async def cut_on_the_air(proxy: ShapedProxy) -> None:
        async with aiohttp.ClientSession() as s:
            request = asyncio.ensure_future(
                s.get(f"{upstream.base}/bytes?n=1&tag=cut", proxy=proxy.url)
            )
            await asyncio.sleep(0.1)  # on the air: it arrives 0.2 s after it was sent
            await asyncio.to_thread(proxy.go_offline, 0.3)
            with pytest.raises(aiohttp.ClientError):
                await request

    with ShapedProxy(make_profile(400, None, None)) as proxy:
        sent = asyncio.run(send(proxy.url, "kept"))
        asyncio.run(cut_on_the_air(proxy))
        time.sleep(0.3)  # past the moment the cut request would have arrived
    arrivals = {path.rsplit("=", 1)[1]: when for path, when in upstream.seen if "tag=" in path}
    assert arrivals["kept"] - sent >= 0.195
    assert "cut" not in arrivals


def test_a_proxy_starts_in_a_suite_that_turns_warnings_into_errors() -> None:
    """``-W error`` (``filterwarnings = error`` in a user's suite): mitmproxy's addons import
    ldap3, which warns as it loads; that must not stop the proxy from starting."""
    import subprocess
    import sys

    script = (
        "from devicelab.netshape.proxy import ShapedProxy\n"
        "with ShapedProxy(None) as proxy:\n"
        "    print(proxy.url)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", script],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("http://127.0.0.1:"), proc.stdout


def test_an_address_that_does_not_resolve_is_named_as_such() -> None:
    # It read "unknown error -2": getaddrinfo's code taken for the OS's errno; then
    # mitmproxy's "no such address"; now the words of --listen, before mitmproxy starts.
    with pytest.raises(BadInput, match=r"999.1.1.1:0: 999.1.1.1 is not an IP address"):
        ShapedProxy(None, host="999.1.1.1", port=0).start()


def test_a_websocket_handshake_record_ends_when_its_101_arrives(
    upstream: Any, make_profile: Any
) -> None:
    # Its end was taken before the 101's head was on the link: one one-way delay after
    # the start, before its own first byte (0.21 s against 0.41 s at slow-3g).
    async def main(url: str) -> float:
        start = time.time()
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{upstream.base}/ws", proxy=url):
            return time.time() - start

    with ShapedProxy(make_profile(200, None, None)) as proxy:
        opened = asyncio.run(main(proxy.url))
        (record,) = [r for r in proxy.records() if r.status == 101]
    assert record.first_byte is not None and record.end is not None
    assert record.start < record.first_byte <= record.end
    assert record.end - record.start >= 0.19  # the whole RTT: request up, 101 down
    assert record.end - record.start <= opened + 0.01


def test_a_subprocess_that_died_is_said_at_once_not_as_a_timeout(make_profile: Any) -> None:
    with ShapedProxy(make_profile(60, None, None), mode="subprocess") as proxy:
        child = proxy._process
        assert child is not None
        child.kill()
        child.wait()
        began = time.monotonic()
        with pytest.raises(EnvironmentProblem, match=r"has exited \(code -9\)") as said:
            proxy.status()
        assert time.monotonic() - began < 5
        assert "in 30 s" not in said.value.one_line()
