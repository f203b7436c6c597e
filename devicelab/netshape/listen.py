"""Where a shaped proxy may listen: the check ``devicelab proxy --listen`` (``serve``) and
``ShapedProxy.start`` (``proxy``) both make before anything starts, so both refuse an
address that is not this machine's with the same words (BadInput, exit 2)."""

from __future__ import annotations

import errno
import ipaddress
import socket

from devicelab.errors import BadInput

__all__ = ["LISTEN_HINT", "check_listen_host"]

LISTEN_HINT = (
    "listen on an IP address of this machine (`ip addr`), 127.0.0.1 (this machine only), "
    "0.0.0.0 (all its IPv4 addresses) or a name that resolves to one"
)


def check_listen_host(host: str, *, named: str, address: str) -> None:
    """Return when ``host`` is an address of this machine or a name resolving to one (a
    bind test on a free port decides it). Raises BadInput, with LISTEN_HINT: "{named}:
    HOST is not an IP address" (999.1.1.1, never looked up), "{named}: HOST does not
    resolve (why)", or "cannot listen on {address}: not an address of this machine"."""
    addresses = _addresses(host, named)
    if not any(_bindable(family, found) for family, found in addresses):
        raise BadInput(
            f"cannot listen on {address}: not an address of this machine", hint=LISTEN_HINT
        )


def _addresses(host: str, named: str) -> list[tuple[socket.AddressFamily, str]]:
    """The (family, address) pairs ``host`` stands for; raises BadInput (see
    ``check_listen_host``) when it is a malformed IP address or a name that does not
    resolve."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host or all(c.isdigit() or c == "." for c in host):
            raise BadInput(f"{named}: {host} is not an IP address", hint=LISTEN_HINT) from None
    else:
        return [(socket.AF_INET6 if address.version == 6 else socket.AF_INET, host)]
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # socket.gaierror; UnicodeError: "a..b"
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise BadInput(
            f"{named}: {host} does not resolve ({str(why).lower()})", hint=LISTEN_HINT
        ) from None
    return [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in found]


def _bindable(family: socket.AddressFamily, address: str) -> bool:
    """Whether a socket can be bound to ``address`` (on a free port): False only when the
    address is not this machine's (another failure is for the proxy's start to tell)."""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError as exc:
        return exc.errno != errno.EADDRNOTAVAIL
    return True
