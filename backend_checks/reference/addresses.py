"""How a client names a reference server: one listening on every address (``0.0.0.0``,
``::``) is reached at this machine's primary address, never at the wildcard itself."""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["primary_address", "usable_url"]


def usable_url(host: str, port: int) -> str:
    """``http://host:port`` as a client can use it (an IPv6 host in brackets). A server on
    every address is named by this machine's primary address, the one its default route
    leaves from (its host name when it has no such route); any other host as it is."""
    try:
        everywhere = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        everywhere = False  # a name: clients use it as given
    if everywhere:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        host = primary_address(family) or socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def primary_address(family: socket.AddressFamily) -> str | None:
    """This machine's address on its default route for ``family``, or None (no route)."""
    # A documentation address (TEST-NET-1, 2001:db8::/32): a UDP connect sends nothing,
    # the kernel only picks the route and the address it would send from.
    far = "192.0.2.1" if family == socket.AF_INET else "2001:db8::1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((far, 9))
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    chosen = ipaddress.ip_address(address)
    return None if chosen.is_unspecified or chosen.is_loopback else address
