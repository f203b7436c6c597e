"""Fixtures of the platform tests: a private real adb server and a fake device behind it,
and a fake usbmuxd with fake iPhones.

Every adb and adbutils call runs with ANDROID_ADB_SERVER_PORT set to the private server's
port and HOME set to a temporary directory, so no stray server starts on 5037 and no
adb key is written to the user's ~/.android.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devicelab.testing.fake_adbd import FakeAdbd
from devicelab.testing.fake_usbmuxd import FakeUsbmuxd


def _adb_binaries() -> list[Any]:
    """Debian's adb and the one in the adbutils wheel, each when present."""
    found = []
    if Path("/usr/bin/adb").exists():
        found.append(pytest.param("/usr/bin/adb", id="debian-adb"))
    try:
        import adbutils

        bundled = Path(adbutils.__file__).parent / "binaries" / "adb"
        if bundled.exists():
            found.append(pytest.param(str(bundled), id="adbutils-adb"))
    except ImportError:
        pass
    return found or [pytest.param("", marks=pytest.mark.skip(reason="no adb binary found"))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AdbServer:
    """A real adb server on a private port; ``run`` calls its command line."""

    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        self.port = _free_port()
        self.env = {
            **os.environ,
            "ANDROID_ADB_SERVER_PORT": str(self.port),
            "HOME": str(home),
            "ADBUTILS_ADB_PATH": binary,
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``adb -P PORT args``; returns the finished process (raises on failure)."""
        done = subprocess.run(
            [self.binary, "-P", str(self.port), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"adb {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done

    def connect(self, serial: str, timeout: float = 10.0) -> None:
        """``adb connect`` and wait until the device is online; fails the test if never."""
        self.run("connect", serial)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listing = self.run("devices").stdout
            if f"{serial}\tdevice" in listing:
                return
            time.sleep(0.1)
        pytest.fail(f"adb never saw {serial} online: {listing!r}")


@pytest.fixture(scope="module", params=_adb_binaries())
def adb_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdbServer]:
    """A private adb server, killed at the end; the process env points adbutils at it."""
    server = AdbServer(request.param, tmp_path_factory.mktemp("adb-home"))
    with pytest.MonkeyPatch.context() as patch:
        for key in ("ANDROID_ADB_SERVER_PORT", "HOME", "ADBUTILS_ADB_PATH"):
            patch.setenv(key, server.env[key])
        server.run("start-server")
        try:
            yield server
        finally:
            server.run("kill-server", check=False)


@pytest.fixture
def fake(adb_server: AdbServer) -> Iterator[FakeAdbd]:
    """A fake device the adb server is connected to; disconnected and stopped after."""
    with FakeAdbd() as device:
        adb_server.connect(device.serial)
        try:
            yield device
        finally:
            adb_server.run("disconnect", device.serial, check=False)


@pytest.fixture
def device(adb_server: AdbServer, fake: FakeAdbd) -> Any:
    """adbutils' AdbDevice for the fake, through the private adb server."""
    import adbutils

    return adbutils.AdbClient(host="127.0.0.1", port=adb_server.port).device(fake.serial)


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
    address = f"127.0.0.1:{_free_port()}"
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", address)
    return address
