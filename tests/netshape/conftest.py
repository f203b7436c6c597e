"""Fixtures of the netshape tests: a real aiohttp upstream server on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator

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
