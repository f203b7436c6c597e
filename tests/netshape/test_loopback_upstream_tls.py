"""HTTPS and wss to a test server on this machine's loopback, with a certificate of its own,
go through the proxy with no flag; servers elsewhere are still verified."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from devicelab.netshape.upstream_tls import LoopbackUpstreamTls, verifies_upstream
from devicelab.testing.upstream import Upstream

DEVICELAB = [sys.executable, "-c", "from devicelab.cli import main; main()"]


@pytest.mark.parametrize(
    ("address", "verified"),
    [
        ("10.0.0.1", True),
        ("192.168.1.1", True),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("backend.example", True),  # a name, not where the connection went
        ("127.0.0.1", False),
        ("127.5.6.7", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_only_an_upstream_off_loopback_is_verified(address: str, verified: bool) -> None:
    assert verifies_upstream(address) is verified


@pytest.mark.parametrize(("peer", "verified"), [("10.0.0.1", True), ("127.0.0.1", False)])
def test_the_hook_relaxes_only_the_tls_that_mitmproxy_built_for_loopback(
    peer: str, verified: bool
) -> None:
    from mitmproxy import connection
    from mitmproxy.addons import tlsconfig
    from mitmproxy.proxy import context
    from mitmproxy.test import taddons
    from mitmproxy.tls import TlsData
    from OpenSSL import SSL

    config, relax = tlsconfig.TlsConfig(), LoopbackUpstreamTls()
    with taddons.context(config, relax) as tctx:
        tctx.configure(config)
        client = connection.Client(
            peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 8080), timestamp_start=0
        )
        server = connection.Server(address=("backend.example", 443))
        server.peername = (peer, 443)
        data = TlsData(server, context.Context(client, tctx.options))
        config.tls_start_server(data)  # mitmproxy's own, as the proxy runs them: first
        relax.tls_start_server(data)
        assert data.ssl_conn is not None
        mode = data.ssl_conn.get_verify_mode()
    assert (mode == SSL.VERIFY_PEER) is verified


async def _get_and_echo(url: str, proxy: str, client_tls: ssl.SSLContext) -> tuple[int, str]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.get(f"{url}/bytes?n=10", proxy=proxy, ssl=client_tls) as response:
            await response.read()
            status = response.status
        wss = url.replace("https://", "wss://")
        async with s.ws_connect(f"{wss}/ws", proxy=proxy, ssl=client_tls) as ws:
            await ws.send_str("echo")
            echoed = (await ws.receive(timeout=10)).data
    return status, echoed


@pytest.mark.slow
def test_https_and_wss_to_a_self_signed_loopback_server_pass_with_no_flag(
    self_signed_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    # Exactly the acceptance check's command line: it used to answer 502, "Certificate
    # verify failed: unable to get local issuer certificate".
    process = subprocess.Popen(
        [*DEVICELAB, "proxy", "--network", "4g", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SSL_CERT_FILE": str(tmp_path / "none.pem")},  # no CA of it
    )
    err = ""
    results: list[tuple[int, str]] = []
    try:
        with Upstream(ssl_context=self_signed_tls) as server:
            assert process.stdout is not None
            proxy = f"http://127.0.0.1:{int(process.stdout.readline().rsplit(':', 1)[1])}"
            while "CA certificate" not in (line := process.stdout.readline()):
                assert line, "the proxy did not name its CA certificate"
            match = re.search(r"CA certificate (\S+)", line)
            assert match is not None
            client_tls = ssl.create_default_context(cafile=match[1])  # trusts the proxy only
            # 127.0.0.1, and a name that resolves to loopback (what mitmproxy connected to
            # decides, not the name; the certificate does not name "localhost" either).
            for url in (server.base, f"https://localhost:{server.port}"):
                results.append(asyncio.run(_get_and_echo(url, proxy, client_tls)))
                results.append(asyncio.run(_get_and_echo(url, proxy, client_tls)))
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    assert results == [(200, "echo")] * 4, err
    said = [line for line in err.splitlines() if "certificate is not verified" in line]
    # Once per upstream: one for 127.0.0.1:PORT, one for localhost:PORT.
    assert len(said) == 2, err
    assert "is on this machine's loopback (127.0.0.1)" in said[0]


def test_shaped_proxy_with_its_defaults_reaches_a_self_signed_loopback_server(
    self_signed_tls: ssl.SSLContext, make_profile: Any
) -> None:
    from devicelab.netshape.proxy import ShapedProxy

    with (
        Upstream(ssl_context=self_signed_tls) as server,
        ShapedProxy(make_profile(20, 10000, 5000)) as proxy,
    ):
        client_tls = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"https": proxy.url}),
            urllib.request.HTTPSHandler(context=client_tls),
        )
        try:
            with opener.open(f"{server.base}/bytes?n=10", timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
    assert status == 200
