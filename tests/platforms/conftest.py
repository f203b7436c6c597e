"""Fixtures of the platform tests: a private real adb server and a fake device behind it,
and a fake usbmuxd with fake iPhones.

Every adb and adbutils call runs with ANDROID_ADB_SERVER_PORT set to the private server's
port and HOME set to a temporary directory, so no stray server starts on 5037 and no
adb key is written to the user's ~/.android.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devicelab.testing.adb_server import PrivateAdbServer, adb_binaries, free_port
from devicelab.testing.fake_usbmuxd import FakeUsbmuxd


def _adb_binaries() -> list[Any]:
    """Debian's adb and the one in the adbutils wheel, each a parameter when present."""
    ids = {"/usr/bin/adb": "debian-adb"}
    found = [pytest.param(b, id=ids.get(b, "adbutils-adb")) for b in adb_binaries()]
    return found or [pytest.param("", marks=pytest.mark.skip(reason="no adb binary found"))]


@pytest.fixture(scope="module", params=_adb_binaries())
def adb_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateAdbServer]:
    """A private adb server, killed at the end; the process env points adbutils at it."""
    server = PrivateAdbServer(tmp_path_factory.mktemp("adb-home"), request.param)
    with server, server.environ():
        yield server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pymobiledevice3 caches pair records under HOME: a fresh one per test."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def usbmuxd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeUsbmuxd]:
    """A fake usbmuxd on a free loopback port, with no phone attached yet;
    USBMUXD_SOCKET_ADDRESS points at it, so nothing reaches a real /var/run/usbmuxd."""
    with FakeUsbmuxd() as mux:
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", mux.address)
        yield mux


@pytest.fixture
def no_usbmuxd(monkeypatch: pytest.MonkeyPatch) -> str:
    """USBMUXD_SOCKET_ADDRESS set to a closed loopback port; returns that address."""
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", address)
    return address
