"""Per-flow timing records: what the shaped link did to each HTTP flow, kept as evidence."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

__all__ = ["FlowRecord", "redacted_url"]


def redacted_url(url: str) -> str:
    """``url`` as a record keeps it: scheme, host, port, path and the query's keys, each
    value replaced by ``***`` (tokens, API keys and signatures ride in query values), and
    never the userinfo or the fragment. Raises nothing (an unparsable URL: its path up to
    the query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    keys = [quote(k, safe="") for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
    query = "&".join(f"{k}=***" for k in keys)
    if parts.query and not keys:
        query = "***"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass
class FlowRecord:
    """One HTTP(S) flow (or WebSocket handshake) through the shaped proxy.

    Times are Unix seconds measured at the device's end of the link: ``start`` when the
    bytes completing the request headers left the device, ``first_byte`` and ``end`` when
    the first and last response bytes reached it. ``bytes_up`` and ``bytes_down`` count
    the request and response bodies as sent (content-encoded, without headers). ``None``
    means not reached (the flow failed or was cut). ``ws_messages`` counts the WebSocket
    messages of an upgraded flow. ``url`` has no query values (``redacted_url``). Over
    HTTP/2 the streams of one connection share its byte offsets, so ``first_byte``/``end``
    are approximate there.
    """

    id: str
    client: str
    method: str
    url: str
    start: float
    status: int | None = None
    first_byte: float | None = None
    end: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    ws_messages: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return asdict(self)
