"""Fixtures of the sampler tests: a private real adb server with the fake phone behind it
(ANDROID_ADB_SERVER_PORT and HOME set, never 5037), and a real headless Chromium.
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


def _adb_binary() -> str:
    if Path("/usr/bin/adb").exists():
        return "/usr/bin/adb"
    import adbutils

    bundled = Path(adbutils.__file__).parent / "binaries" / "adb"
    if not bundled.exists():
        pytest.skip("no adb binary found")
    return str(bundled)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AdbServer:
    """A real adb server on a private port."""

    def __init__(self, home: Path) -> None:
        self.binary = _adb_binary()
        self.port = _free_port()
        self.env = {**os.environ, "ANDROID_ADB_SERVER_PORT": str(self.port), "HOME": str(home),
                    "ADBUTILS_ADB_PATH": self.binary}  # fmt: skip

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.binary, "-P", str(self.port), *args], env=self.env,
                              capture_output=True, text=True, timeout=20, check=False)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"adb {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done

    def connect(self, serial: str) -> None:
        self.run("connect", serial)
        deadline = time.monotonic() + 10
        while f"{serial}\tdevice" not in (listing := self.run("devices").stdout):
            if time.monotonic() > deadline:
                pytest.fail(f"adb never saw {serial} online: {listing!r}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbServer]:
    """A private adb server, killed at the end; the env points adbutils at it."""
    server = AdbServer(tmp_path_factory.mktemp("adb-home"))
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
    """A fake phone the adb server is connected to."""
    with FakeAdbd() as device:
        adb_server.connect(device.serial)
        try:
            yield device
        finally:
            adb_server.run("disconnect", device.serial, check=False)


@pytest.fixture
def device(adb_server: AdbServer, fake: FakeAdbd) -> Any:
    """adbutils' AdbDevice of the fake, through the private server."""
    import adbutils

    return adbutils.AdbClient(host="127.0.0.1", port=adb_server.port).device(fake.serial)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A real headless Chromium (Playwright) with one blank page; yields the page."""
    from devicelab.platforms.web import CHROMIUM_FLAGS, DEFAULT_BROWSER

    if not Path(DEFAULT_BROWSER).is_file():
        pytest.skip(f"no browser at {DEFAULT_BROWSER}")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=DEFAULT_BROWSER, headless=True,
                                         args=list(CHROMIUM_FLAGS))  # fmt: skip
    try:
        yield browser.new_page()
    finally:
        browser.close()
        playwright.stop()
