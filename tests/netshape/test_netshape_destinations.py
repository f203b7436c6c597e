"""Destinations: a client off this machine (an allowed phone on the lab's Wi-Fi) must not
reach the lab machine's loopback services through the proxy (a trust-auth PostgreSQL, the
adb server), except the lab's declared targets by their alias; a client on this machine
reaches loopback as before.

The end-to-end tests make the proxy see a client off loopback by binding the client's
socket to this machine's non-loopback address (the bytes still go to 127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from devicelab.netshape.destination import refusal
from devicelab.netshape.proxy import ShapedProxy

ALIAS = "backend.devicelab.test"


@pytest.mark.parametrize(
    ("client", "host"),
    [
        ("192.168.1.20", "127.0.0.1"),
        ("192.168.1.20", "127.5.6.7"),
        ("192.168.1.20", "::1"),
        ("192.168.1.20", "[::1]"),
        ("192.168.1.20", "::ffff:127.0.0.1"),
        ("192.168.1.20", "LocalHost"),
        ("192.168.1.20", "localhost."),
        ("192.168.1.20", "db.localhost"),
        ("fd00::5", "127.0.0.1"),
    ],
)
def test_a_client_off_this_machine_is_refused_its_loopback(client: str, host: str) -> None:
    why = refusal(client, host, 5432, {ALIAS: "127.0.0.1"})
    assert why is not None and "loopback" in why and f"{host}:5432" in why


@pytest.mark.parametrize(
    ("client", "host"),
    [
        ("127.0.0.1", "127.0.0.1"),  # this machine reaches its loopback anyway
        ("::1", "localhost"),
        ("::ffff:127.0.0.1", "::1"),
        ("192.168.1.20", ALIAS),  # the lab's declared target, by its alias
        ("192.168.1.20", ALIAS.upper()),
        ("192.168.1.20", "example.com"),
        ("192.168.1.20", "10.0.0.5"),
    ],
)
def test_loopback_clients_aliases_and_other_hosts_are_let_through(client: str, host: str) -> None:
    assert refusal(client, host, 5432, {ALIAS: "127.0.0.1"}) is None


def _lan_address() -> str | None:
    """This machine's non-loopback IPv4 address (None when it has none): a UDP socket's
    connect picks the source address and sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    if address.startswith("127.") or address == "0.0.0.0":
        return None
    with socket.socket() as s:
        try:
            s.bind((address, 0))
        except OSError:
            return None
    return address


LAN = _lan_address()
needs_lan = pytest.mark.skipif(LAN is None, reason="no non-loopback address to bind")


def _exchange(proxy_port: int, request: bytes, source: str | None, then: bytes = b"") -> bytes:
    """Send ``request`` to the proxy from ``source`` (None: loopback) and return what comes
    back (after a 200 to a CONNECT: ``then`` sent in the tunnel, and its answer)."""
    with socket.socket() as s:
        s.settimeout(10)
        if source is not None:
            s.bind((source, 0))
        s.connect(("127.0.0.1", proxy_port))
        s.sendall(request)
        answer = _read_answer(s)
        if then and answer.startswith(b"HTTP/1.1 200"):
            s.sendall(then)
            answer += _read_answer(s)
        return answer


def _read_answer(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            while len(body) < length:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
    return head + b"\r\n\r\n" + body


@pytest.fixture
def lan_proxy(upstream: Any) -> Iterator[ShapedProxy]:
    assert LAN is not None
    allow = ["127.0.0.0/8", f"{LAN}/32"]
    with ShapedProxy(None, allow=allow, aliases={ALIAS: "127.0.0.1"}) as proxy:
        yield proxy


def _get(host: str, port: int, path: str = "/bytes?n=1", extra: str = "") -> bytes:
    return (
        f"GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n"
    ).encode()


@needs_lan
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", socket.gethostname()])
def test_a_lan_client_gets_403_for_a_loopback_server(
    lan_proxy: ShapedProxy, upstream: Any, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert LAN is not None
    if host == socket.gethostname() and not all(
        info[4][0].startswith("127.") or info[4][0] == "::1"
        for info in socket.getaddrinfo(host, None)
    ):
        pytest.skip("this machine's name does not resolve to loopback")
    port = urllib.parse.urlsplit(upstream.base).port
    assert port is not None
    marker = f"/bytes?n=1&refused={host}"
    with caplog.at_level(logging.WARNING, logger="devicelab.netshape"):
        plain = _exchange(lan_proxy.port, _get(host, port, marker), LAN)
        connect = _exchange(lan_proxy.port, f"CONNECT {host}:{port} HTTP/1.1\r\n\r\n".encode(), LAN)
        upgrade = _exchange(
            lan_proxy.port,
            _get(
                host,
                port,
                "/ws",
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            ),
            LAN,
        )
    if host == socket.gethostname():  # known only once resolved: refused at the connect
        assert plain.startswith(b"HTTP/1.1 502") and b"loopback" in plain
        assert connect.startswith(b"HTTP/1.1 502") and b"loopback" in connect
    else:
        for answer in (plain, connect, upgrade):
            assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
            assert b"loopback" in answer
    assert marker not in [path for path, _ in upstream.seen]
    lines = [r.getMessage() for r in caplog.records if "refused client" in r.getMessage()]
    assert any(f"refused client {LAN}: {host}:{port}" in line for line in lines), lines


@needs_lan
def test_a_lan_client_still_reaches_the_lab_backend_by_its_alias(
    lan_proxy: ShapedProxy, upstream: Any
) -> None:
    assert LAN is not None
    port = urllib.parse.urlsplit(upstream.base).port
    assert port is not None
    plain = _exchange(lan_proxy.port, _get(ALIAS, port), LAN)
    assert plain.startswith(b"HTTP/1.1 200") and plain.endswith(b"\r\n\r\nx")
    tunnelled = _exchange(
        lan_proxy.port,
        f"CONNECT {ALIAS}:{port} HTTP/1.1\r\n\r\n".encode(),
        LAN,
        then=f"GET /bytes?n=2 HTTP/1.1\r\nHost: {ALIAS}:{port}\r\n\r\n".encode(),
    )
    assert tunnelled.startswith(b"HTTP/1.1 200") and tunnelled.endswith(b"\r\n\r\nxx")


def test_a_loopback_client_still_reaches_loopback_servers(upstream: Any) -> None:
    port = urllib.parse.urlsplit(upstream.base).port
    assert port is not None
    with ShapedProxy(None, aliases={ALIAS: "127.0.0.1"}) as proxy:
        for host in ("127.0.0.1", "localhost", ALIAS):
            answer = _exchange(proxy.port, _get(host, port), None)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\nx")
        tunnelled = _exchange(
            proxy.port,
            f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode(),
            None,
            then=f"GET /bytes?n=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode(),
        )
        assert tunnelled.endswith(b"\r\n\r\nx")


@needs_lan
def test_a_name_that_turns_to_loopback_after_the_check_is_cut_before_the_request(
    lan_proxy: ShapedProxy, upstream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the name answers an outside address first, loopback at the connect.
    name = socket.gethostname()
    if not all(i[4][0].startswith("127.") for i in socket.getaddrinfo(name, None)):
        pytest.skip("this machine's name does not resolve to loopback")
    assert LAN is not None
    port = urllib.parse.urlsplit(upstream.base).port
    assert port is not None
    real = asyncio.BaseEventLoop.getaddrinfo
    answered: list[str] = []

    async def rebinding(self: Any, host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == name and not answered:
            answered.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.113.9", port))]
        return await real(self, host, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", rebinding)
    marker = "/bytes?n=1&rebound=1"
    answer = _exchange(lan_proxy.port, _get(name, port, marker), LAN)
    assert answered, "the proxy did not look the name up"
    assert answer.startswith(b"HTTP/1.1 502"), answer[:200]
    assert marker not in [path for path, _ in upstream.seen]
