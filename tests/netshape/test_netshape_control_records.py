"""The control endpoint's host is matched whatever its case, and the flow records it hands
to any allowed client (and a run keeps as evidence) hold no query values nor userinfo."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.parse
from typing import Any

import aiohttp
import pytest

from devicelab.netshape.proxy import ShapedProxy
from devicelab.netshape.records import redacted_url


async def _get(url: str, proxy: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, proxy=proxy) as response,
    ):
        return response.status, await response.text()


@pytest.mark.parametrize("host", ["NETSHAPE.DEVICELAB", "NetShape.DeviceLab"])
def test_the_control_host_is_matched_whatever_its_case(host: str) -> None:
    # A raw request: aiohttp (yarl) would lower-case the host itself.
    request = f"GET http://{host}/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with ShapedProxy(None) as proxy, socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.settimeout(10)
        s.sendall(request.encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["offline"] is False


def test_records_keep_query_keys_but_not_their_values(upstream: Any) -> None:
    port = urllib.parse.urlsplit(upstream.base).port
    secret = "s3cr3t-t0ken"
    url = f"http://user:{secret}pw@127.0.0.1:{port}/bytes?n=1&access_token={secret}&apikey={secret}"
    with ShapedProxy(None) as proxy:
        status, _ = asyncio.run(_get(url, proxy.url))
        _, served = asyncio.run(_get("http://netshape.devicelab/records", proxy.url))
        kept = proxy.records()
    assert status == 200
    assert secret not in served and secret not in json.dumps([r.to_dict() for r in kept])
    (record,) = [r for r in kept if "/bytes" in r.url]
    assert record.url == f"http://127.0.0.1:{port}/bytes?n=***&access_token=***&apikey=***"


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://a.example/o/x.png?X-Goog-Signature=ab&alt=media", None),
        ("https://u:p@a.example:8443/p", "https://a.example:8443/p"),
        ("http://[::1]:8080/p?t=1#frag", "http://[::1]:8080/p?t=***"),
        ("http://a.example/p?opaque", "http://a.example/p?opaque=***"),
        ("http://a.example/p", "http://a.example/p"),
    ],
)
def test_a_recorded_url_has_no_query_values(url: str, kept: str | None) -> None:
    expected = kept or "https://a.example/o/x.png?X-Goog-Signature=***&alt=***"
    assert redacted_url(url) == expected
