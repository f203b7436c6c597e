"""Who may use the proxy and reach what through it, and the log of the refusals.

Which clients: those in ``netshape_allow`` (``client_allowed``). Which destinations: a
client that is not on this machine's loopback must not reach the lab machine's loopback
services (a trust-auth PostgreSQL, the adb server) through it, except the lab's own
targets, by their alias (``netshape_aliases``). A loopback client reaches loopback as
before: it can anyway, without the proxy.

``refusal`` decides from the names alone (before any lookup); ``reaches_loopback``
judges where a server connection goes, by what the name resolves to or where it went.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Refusals", "client_allowed", "loopback_ip", "reaches_loopback", "refusal"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``text`` writes (``[v6]`` and a ``%zone`` allowed; an IPv4-mapped
    IPv6 address read as its IPv4 one), or None when it writes none."""
    try:
        found = ipaddress.ip_address(text.strip("[]").split("%", maxsplit=1)[0])
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def client_allowed(host: str, allow: Iterable[_Network]) -> bool:
    """Whether the client at ``host`` (its IP address; an IPv4-mapped IPv6 address counts
    as the IPv4 one) is in one of the ``allow`` networks; False for no address."""
    address = _address(host)
    return address is not None and any(address in net for net in allow)


class Refusals:
    """The log lines of refusals: each key (a client, a client and a destination) said
    once, then every 100th time, so a phone retrying all night does not fill the log (or a
    stderr pipe nobody reads, which stops the proxy). Keeps at most ``kept`` keys; logs at
    ``level``."""

    def __init__(
        self, logger: logging.Logger, kept: int = 4096, level: int = logging.WARNING
    ) -> None:
        self._logger = logger
        self._kept = kept
        self._level = level
        self._counts: dict[str, int] = {}

    def say(self, key: str, message: str) -> None:
        """Log ``message`` if this refusal of ``key`` is the first or a 100th."""
        if len(self._counts) >= self._kept:
            self._counts.clear()
        count = self._counts[key] = self._counts.get(key, 0) + 1
        if count == 1 or count % 100 == 0:
            times = f" ({count} times)" if count > 1 else ""
            self._logger.log(self._level, "%s%s", message, times)

    def clear(self) -> None:
        """Start counting afresh: each key's next refusal is said again."""
        self._counts.clear()


async def reaches_loopback(host: str, port: int, peername: Any) -> bool:
    """Whether a server connection to ``host``:``port`` goes to loopback: where it went
    when connected (``peername``), else any address the name resolves to. False when the
    name does not resolve (mitmproxy's own connect says so)."""
    if peername is not None:
        return loopback_ip(str(peername[0]))
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    except OSError:
        return False
    return any(loopback_ip(str(info[4][0])) for info in infos)


def loopback_ip(address: str) -> bool:
    """Whether ``address`` is an IP address on loopback (127.0.0.0/8, ::1, and 127.x
    written as an IPv4-mapped IPv6 address); False for anything that is not an address."""
    found = _address(address)
    return found is not None and found.is_loopback


def _loopback_name(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost") or loopback_ip(name)


def refusal(client: str, host: str, port: int, aliases: Mapping[str, str]) -> str | None:
    """Why ``client`` (its IP address) may not reach ``host``:``port`` through the proxy,
    or None when it may. Judged by name only: a loopback client reaches anything, an alias
    (a key of ``aliases``) is the lab's declared target, and any other client is refused a
    loopback address or the name localhost (or a name under it). A name that resolves to
    loopback is caught where the proxy connects (``loopback_ip``)."""
    if loopback_ip(client) or host.lower().rstrip(".") in aliases:
        return None
    if _loopback_name(host):
        return f"{host}:{port} is on the proxy's loopback"
    return None
