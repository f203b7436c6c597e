"""An allow-list that holds only the other IP family's clients: a loopback listener hears
clients of its own family only (127.0.0.1 on an IPv4 one), so ``--listen 127.0.0.1:PORT
--allow ::1/128`` is a proxy nobody can use, and ``devicelab proxy`` says so at start."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from devicelab.netshape.serve import unreachable

DEVICELAB = [sys.executable, "-c", "from devicelab.cli import main; main()"]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("host", "allow", "missing"),
    [
        ("127.0.0.1", ["::1/128"], "leaves IPv4 loopback out"),
        ("127.0.0.1", ["::1/128", "10.0.0.0/8"], "allow 127.0.0.0/8"),
        ("::1", ["127.0.0.0/8"], "leaves IPv6 loopback out"),
        ("0.0.0.0", ["::1/128"], "names only IPv6 networks"),
        ("192.168.1.5", ["fd00::/8"], "names only IPv6 networks"),
        # asyncio's IPv6 listener sets IPV6_V6ONLY: IPv4 clients cannot connect to "::".
        ("::", ["127.0.0.0/8"], "names only IPv4 networks"),
    ],
)
def test_an_allow_list_of_the_other_family_is_unreachable(
    host: str, allow: list[str], missing: str
) -> None:
    why = unreachable(host, allow)
    assert why is not None and missing in why


@pytest.mark.parametrize(
    ("host", "allow"),
    [
        ("127.0.0.1", ["127.0.0.1/32"]),
        ("::1", ["::1/128"]),
        ("localhost", ["::1/128"]),  # it listens on both
        ("0.0.0.0", ["10.0.0.0/8"]),
        ("lab-host", ["::1/128"]),  # a name: its family is not known
    ],
)
def test_an_allow_list_of_the_listeners_family_is_reachable(host: str, allow: list[str]) -> None:
    assert unreachable(host, allow) is None


def test_an_ipv4_loopback_proxy_allowing_only_ipv6_loopback_says_so_at_start() -> None:
    process = subprocess.Popen(
        [*DEVICELAB, "proxy", "--network", "4g", "--listen", "127.0.0.1:0", "--allow", "::1/128"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("listening on 127.0.0.1:")
        lines = [process.stdout.readline() for _ in range(2)]
        # What the warning is about: this machine's client comes from 127.0.0.1, refused.
        port = int(first.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
            client.settimeout(5)
            try:
                answer = client.recv(100)
            except ConnectionResetError:
                answer = b""
        assert answer == b"", "a client on 127.0.0.1 was let in"
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    (warning,) = [line for line in err.splitlines() if "no allowed client" in line]
    assert "--allow ::1/128 leaves IPv4 loopback out" in warning
    printed = "".join(lines) + out
    assert "adb reverse" not in printed and "curl" not in printed
    assert "allowed clients: ::1/128 (none can reach 127.0.0.1)" in printed


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_loopback_proxy_allowing_ipv6_loopback_prints_the_device_steps() -> None:
    process = subprocess.Popen(
        [*DEVICELAB, "proxy", "--network", "4g", "--listen", "[::1]:0", "--allow", "::1/128"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("listening on [::1]:")
        lines = [process.stdout.readline() for _ in range(3)]
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    assert "no allowed client" not in err
    assert "adb reverse" in "".join(lines) + out
