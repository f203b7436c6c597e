"""Fixtures shared across the test folders: the fake android phone behind a private real
adb server (ANDROID_ADB_SERVER_PORT and HOME set, never 5037). tests/platforms overrides
``adb_server`` to run once per adb binary found.

``standins`` and ``app_build`` skip, with the reason, a test that needs what stands in for
a phone (Appium in tools/appium, chromium and chromedriver) or the built test app when
this machine lacks it. The fixtures that start an Appium or a lab on a stand-in phone
depend on them, so a test is skipped by the fixtures it uses, never by a module-wide
mark. They are session-scoped so that module-scoped fixtures can depend on them; they add
no marker: ``device`` (devicelab.pytest_plugin) is only for tests on a real device.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import FakeAdbd


def pytest_sessionstart(session: pytest.Session) -> None:
    """A suite started in the background (``nohup``, ``cmd &`` in a script) inherits SIGINT
    (and under nohup SIGHUP) ignored, and so do the commands it starts; the Ctrl-C and
    hang-up tests are about a terminal's, so both are given back their default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateAdbServer]:
    """A private adb server, killed at the end; the process env points adbutils at it."""
    try:
        server = PrivateAdbServer(tmp_path_factory.mktemp("adb-home"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with server, server.environ():
        yield server


@pytest.fixture
def fake(adb_server: PrivateAdbServer) -> Iterator[FakeAdbd]:
    """A fake phone the adb server is connected to; disconnected and stopped after."""
    with adb_server.phone() as device:
        yield device


@pytest.fixture
def device(adb_server: PrivateAdbServer, fake: FakeAdbd) -> Any:
    """adbutils' AdbDevice of the fake, through the private adb server."""
    import adbutils

    return adbutils.AdbClient(host="127.0.0.1", port=adb_server.port).device(fake.serial)


@pytest.fixture(scope="session")
def standins() -> None:
    """Skips the test, with the reason, when the WebView stand-in cannot run on this
    machine (devicelab.testing.standins.standin_missing); returns nothing otherwise."""
    from devicelab.testing.standins import standin_missing

    if missing := standin_missing():
        pytest.skip(missing)


@pytest.fixture(scope="session")
def app_build() -> Path:
    """Returns the folder of the built test app (devicelab.lab.app_build_dir); skips the
    test, with the reason, when it is not built."""
    from devicelab.lab import app_build_dir

    folder = app_build_dir()
    if not (folder / "index.html").exists():
        pytest.skip("the test app is not built: run ./dev/setup")
    return folder
