"""WebSocket URLs in a plain proxy request: ``GET ws://host/path`` taken as ``http://``.

A client asked to open ``ws://host/path`` through an HTTP proxy should send the upgrade
request in absolute form with the ``http`` scheme (or tunnel it with CONNECT). Some send
the WebSocket URL as it is: WebKit on iOS with a manual Wi-Fi proxy (the way devicelab
routes an iPhone) and aiohttp's ``ws_connect(proxy=...)``. mitmproxy 12 refuses that
request line: with ``400 Bad HTTP request line`` when the URL has no port (it knows no
default port for ``ws``), otherwise with ``Invalid request scheme: ws``; the app's
realtime socket to a plain-HTTP backend (the reference backend on the lab machine) then
never opens.

:func:`install` wraps mitmproxy's HTTP/1 request-head reader so that such a request line
reads as the one the client meant (``ws`` -> ``http``, ``wss`` -> ``https``): mitmproxy
then upgrades it as any WebSocket request, and our addon shapes its messages. Only request
lines mitmproxy would refuse change. The wrapper is process-wide (mitmproxy's reader is a
module function); it is installed once, by the addon's ``load``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["install", "rewrite_request_line"]

_WS_TARGET = re.compile(rb"^([A-Za-z]+ )(wss?)(://)", re.IGNORECASE)
_SCHEMES = {b"ws": b"http", b"wss": b"https"}
_MARK = "_devicelab_ws_schemes"


def rewrite_request_line(line: bytes) -> bytes:
    """``line`` with a ``ws://`` or ``wss://`` absolute target as ``http://`` / ``https://``;
    any other line unchanged."""
    match = _WS_TARGET.match(line)
    if match is None:
        return line
    scheme = _SCHEMES[match.group(2).lower()]
    return match.group(1) + scheme + match.group(3) + line[match.end() :]


def install() -> None:
    """Make mitmproxy's HTTP/1 request reader take WebSocket URLs (idempotent)."""
    from mitmproxy.net.http import http1

    current: Callable[[list[bytes]], Any] = http1.read_request_head
    if getattr(current, _MARK, False):
        return

    def read_request_head(lines: list[bytes]) -> Any:
        if lines:
            lines = [rewrite_request_line(lines[0]), *lines[1:]]
        return current(lines)

    setattr(read_request_head, _MARK, True)
    http1.read_request_head = read_request_head
