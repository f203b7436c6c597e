"""WebSocket URLs in a proxy request line, read by mitmproxy's own HTTP/1 parser."""

from __future__ import annotations

import pytest
from mitmproxy.net.http import http1

from devicelab.netshape import wsscheme


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            b"GET ws://lab.local:54321/realtime HTTP/1.1",
            b"GET http://lab.local:54321/realtime HTTP/1.1",
        ),
        (b"GET WSS://lab.local/x?a=ws:// HTTP/1.1", b"GET https://lab.local/x?a=ws:// HTTP/1.1"),
        (b"GET http://lab.local/ws HTTP/1.1", b"GET http://lab.local/ws HTTP/1.1"),
        (b"GET /ws://x HTTP/1.1", b"GET /ws://x HTTP/1.1"),
        (b"CONNECT lab.local:443 HTTP/1.1", b"CONNECT lab.local:443 HTTP/1.1"),
    ],
)
def test_only_websocket_targets_are_rewritten(line: bytes, expected: bytes) -> None:
    assert wsscheme.rewrite_request_line(line) == expected


def test_mitmproxy_reads_websocket_urls_once_installed() -> None:
    head = [b"GET ws://lab.local/realtime HTTP/1.1", b"Host: lab.local", b"Upgrade: websocket"]
    wsscheme.install()
    wsscheme.install()  # idempotent: one wrapper, not two
    request = http1.read_request_head(head)
    assert (request.scheme, request.host, request.port) == ("http", "lab.local", 80)
    secure = http1.read_request_head([b"GET wss://lab.local/x HTTP/1.1", b"Host: lab.local"])
    assert (secure.scheme, secure.port) == ("https", 443)
    inner = http1.read_request_head.__closure__
    assert inner is not None and not any(
        getattr(c.cell_contents, "_devicelab_ws_schemes", False) for c in inner
    )
