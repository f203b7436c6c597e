"""HTTP/2 through the shaped proxy: what a device negotiates, and ``http2=False``.

Over HTTP/2 the streams of one connection share its place in the link, and a server may
push megabytes into the loopback socket buffers ahead of it, so a small response on a busy
connection waits behind them (docs/netshape.md). ``http2=False`` (``--no-http2``) makes
devices and servers speak HTTP/1.1: each concurrent request on its own connection, shared
fairly. The server is Node's http2 module (HTTP/2 and HTTP/1.1 on one TLS port), the
client httpx, each as a real peer on loopback.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devicelab.netshape.proxy import ShapedProxy

_SERVER_JS = """
const http2 = require('http2'), fs = require('fs');
const chunk = Buffer.alloc(16384, 120);
const server = http2.createSecureServer({
  key: fs.readFileSync(process.argv[2]), cert: fs.readFileSync(process.argv[3]),
  allowHTTP1: true,
}, (req, res) => {
  let left = Number(new URL(req.url, 'https://x').searchParams.get('n') || '1');
  res.writeHead(200, {'content-length': String(left)});
  const pump = () => {
    while (left > 0) {
      const part = chunk.subarray(0, Math.min(left, chunk.length)); left -= part.length;
      if (!res.write(part)) { res.once('drain', pump); return; }
    }
    res.end();
  };
  pump();
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"""


@pytest.fixture
def h2_server(self_signed_tls: ssl.SSLContext, tmp_path: Path) -> Iterator[str]:
    """``https://127.0.0.1:PORT``: Node's HTTP/2 server (HTTP/1.1 too), /?n=BYTES."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (./dev/setup installs it)")
    script = tmp_path / "h2server.js"
    script.write_text(_SERVER_JS)
    proc = subprocess.Popen(
        [node, str(script), str(tmp_path / "key.pem"), str(tmp_path / "cert.pem")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"https://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _tiny_during_two_downloads(proxy: ShapedProxy, base: str) -> tuple[str, float]:
    """(HTTP version, seconds) of a tiny request sent 0.5 s into two 400 KB downloads,
    all from one client (httpx offering HTTP/2)."""
    trust = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
    async with httpx.AsyncClient(http2=True, proxy=proxy.url, verify=trust, timeout=30) as c:
        await c.get(f"{base}/?n=10")

        async def bulk() -> Any:
            return await c.get(f"{base}/?n=400000")

        downloads = [asyncio.create_task(bulk()) for _ in range(2)]
        await asyncio.sleep(0.5)
        start = time.perf_counter()
        tiny = await c.get(f"{base}/?n=10")
        took = time.perf_counter() - start
        for download in downloads:
            assert len((await download).content) == 400_000
        return tiny.http_version, took


def test_a_device_gets_http2_by_default_and_http1_with_http2_off(
    h2_server: str, make_profile: Any
) -> None:
    # 40 ms RTT, 250 KB/s down: the two downloads take 3.2 s.
    profile = make_profile(40, 2000, None)
    with ShapedProxy(profile, verify_upstream=False) as proxy:
        version, _ = asyncio.run(_tiny_during_two_downloads(proxy, h2_server))
    assert version == "HTTP/2"
    with ShapedProxy(profile, verify_upstream=False, http2=False) as proxy:
        version, took = asyncio.run(_tiny_during_two_downloads(proxy, h2_server))
    assert version == "HTTP/1.1"
    # Its own connection (CONNECT, TLS and the request: 3 round trips, 0.12 s) with its
    # fair share of the downlink, not behind 0.8 MB of downloads (3.2 s).
    assert took < 0.6
