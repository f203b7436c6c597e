"""HTTPS servers on this machine's loopback: their certificates are not verified.

mitmproxy opens its own TLS connection to every HTTPS server and verifies the server's
certificate (unless ``ssl_insecure``). For a server on loopback that protects nothing (the
connection never leaves this machine), and a lab's local test servers have self-signed
certificates: ``LoopbackUpstreamTls`` turns verification off for those connections only.
Servers elsewhere are verified as the options say (``--upstream-ca``,
``--no-verify-upstream``).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from mitmproxy import ctx
from mitmproxy.tls import TlsData
from OpenSSL import SSL

__all__ = ["LoopbackUpstreamTls", "verifies_upstream"]

logger = logging.getLogger("devicelab.netshape")

#: Upstreams remembered as already logged before the memory starts again.
_SAID_KEPT = 4096


def verifies_upstream(address: str) -> bool:
    """Whether the proxy verifies the certificate of an HTTPS server at ``address`` (the
    IP address it connected to): False on loopback (127.0.0.0/8, ::1, and 127.x written
    as an IPv4-mapped IPv6 address), True anywhere else and for anything that is not an
    IP address (a name says nothing about where the connection went)."""
    try:
        ip = ipaddress.ip_address(address.split("%", maxsplit=1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_loopback


class LoopbackUpstreamTls:
    """The addon. It must come after mitmproxy's ``TlsConfig``, whose ``tls_start_server``
    builds the server connection (``data.ssl_conn``) that this one relaxes."""

    def __init__(self) -> None:
        self._said: set[tuple[str, str]] = set()

    def tls_start_server(self, data: TlsData) -> None:
        """Turn off certificate verification of ``data``'s server when it is on loopback
        (the address mitmproxy connected to: a name resolved to 127.0.0.1 counts)."""
        if data.ssl_conn is None or ctx.options.ssl_insecure:
            return  # nothing to relax: no TLS built, or nothing is verified anyway
        server: Any = data.conn
        # The TCP connection is open when the server's TLS starts, so peername is where it
        # went; the address asked for is only a fallback.
        where = server.peername or server.address
        if not where or verifies_upstream(str(where[0])):
            return
        data.ssl_conn.set_verify(SSL.VERIFY_NONE, None)
        asked = f"{server.address[0]}:{server.address[1]}" if server.address else "?"
        key = (asked, str(where[0]))
        if key not in self._said:
            if len(self._said) >= _SAID_KEPT:
                self._said.clear()
            self._said.add(key)
            logger.info(
                "HTTPS server %s is on this machine's loopback (%s): its certificate is"
                " not verified",
                asked,
                where[0],
            )
