"""Which destinations a client may reach through the proxy: a client that is not on this
machine's loopback must not reach the lab machine's loopback services (a trust-auth
PostgreSQL, the adb server) through it, except the lab's own targets, by their alias
(``netshape_aliases``). A loopback client reaches loopback as before: it can anyway,
without the proxy.

``refusal`` decides from the names alone (before any lookup); ``loopback_ip`` judges an
address a name resolved to, or the one a connection reached.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

__all__ = ["loopback_ip", "refusal"]


def loopback_ip(address: str) -> bool:
    """Whether ``address`` is an IP address on loopback (127.0.0.0/8, ::1, and 127.x
    written as an IPv4-mapped IPv6 address); False for anything that is not an address."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", maxsplit=1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


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
