"""free_port: a port below the kernel's ephemeral range, where no outgoing connection of
another program can take it before the caller listens on it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devicelab import ports
from devicelab.ports import free_port


def _ephemeral_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_a_picked_port_is_below_the_ephemeral_range_and_can_be_listened_on() -> None:
    # The kernel's pick of port 0 lies in that range: two test workers at once, and an
    # Appium picked a port that a load test's outgoing connection held when node listened.
    first = _ephemeral_start()
    picked = {free_port() for _ in range(20)}
    assert all(20000 <= port < first for port in picked), (picked, first)
    assert len(picked) > 1  # not one fixed port for every caller
    port = picked.pop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_a_taken_port_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        draws = iter([busy, busy])
        monkeypatch.setattr(ports, "_LOWEST", 1024)
        monkeypatch.setattr(ports, "_ephemeral_start", lambda: 65536)
        monkeypatch.setattr(ports.random, "randrange", lambda a, b: next(draws, 40000))
        assert free_port() not in (busy, 0)


def test_without_room_below_the_range_the_kernel_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_ephemeral_start", lambda: 20500)
    port = free_port()
    assert port > 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
