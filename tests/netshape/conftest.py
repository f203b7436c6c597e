"""Fixtures of the netshape tests: a real aiohttp upstream server on loopback, a server TLS
context with a self-signed certificate."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devicelab.models.network import NetworkProfile
from devicelab.testing.upstream import Upstream


def make_profile(
    rtt_ms: float, down_kbps: float | None, up_kbps: float | None, jitter_ms: float = 0.0
) -> NetworkProfile:
    """A test network profile."""
    return NetworkProfile(
        id="test",
        label="test",
        source="tests",
        rtt_ms=rtt_ms,
        down_kbps=down_kbps,
        up_kbps=up_kbps,
        jitter_ms=jitter_ms,
    )


async def status_of_tiny(upstream: Any, proxy: str) -> int:
    """The HTTP status of a 1-byte GET from ``upstream`` through the proxy at ``proxy``
    (5 s at most). Raises aiohttp's errors."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{upstream.base}/bytes?n=1", proxy=proxy) as response,
    ):
        await response.read()
        return response.status


@pytest.fixture(name="make_profile", scope="session")
def make_profile_fixture() -> object:
    """The ``make_profile`` helper, as a fixture."""
    return make_profile


@pytest.fixture(scope="session", autouse=True)
def quick_gil_handoff() -> Iterator[None]:
    """The in-process proxy, the upstream server and the client share one GIL here: hand
    it over every 0.5 ms instead of 5 ms so that waiting for it does not pass for delay."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(previous)


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture
def self_signed_tls(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context
