"""Free loopback ports: the one helper the platforms, backend_checks and the test fakes share.

It imports only the standard library and devicelab.errors, so any layer of devicelab (and
backend_checks) may use it without changing the direction imports flow in.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

from devicelab.errors import BadInput

__all__ = ["env_port", "free_port", "port_number"]

#: Where the kernel says its ephemeral range is (the local ports of outgoing connections).
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: The lowest port picked: above the well-known and most registered services' ports.
_LOWEST = 20000
_TRIES = 50


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago.

    Picked below the kernel's ephemeral range when there is room (20000 up to it): the
    caller listens on it some seconds later (a node server, PostgreSQL), and a port of
    that range can meanwhile become the local port of any outgoing connection on the
    machine (a load test makes thousands). Else, or when 50 tries find none free, the
    kernel's pick of port 0. Returns the port number. Raises OSError when ``host`` cannot
    be bound (not an address of this machine). Another listener may still take the port
    before the caller binds it.
    """
    first = _ephemeral_start()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if first - _LOWEST > 1000:
        for _ in range(_TRIES):
            port = random.randrange(_LOWEST, first)  # a port, not a secret
            with socket.socket(family) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (32768, Linux's default, when it
    cannot be read)."""
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_number(text: str, where: str) -> int:
    """``text`` as a TCP port (1-65535). Raises BadInput naming ``where`` (the variable or
    option it came from) for anything else."""
    text = text.strip()
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise BadInput(
            f"{where}: {text!r} is not a TCP port (1-65535)",
            hint=f"set {where} to a port number, or unset it for the default",
        )
    return int(text)


def env_port(name: str, default: int) -> int:
    """The port the environment variable ``name`` holds, ``default`` when it is unset or
    empty. Raises BadInput (exit 2) naming the variable for a value that is no port."""
    text = os.environ.get(name, "").strip()
    return port_number(text, name) if text else default
