"""Free loopback ports: the one helper the platforms, backend_checks and the test fakes share.

It imports only the standard library, so any layer of devicelab (and backend_checks) may
use it without changing the direction imports flow in.
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the kernel's pick of port 0).

    Returns the port number. Raises OSError when ``host`` cannot be bound (not an address
    of this machine). Another program may take the port before the caller binds it.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
