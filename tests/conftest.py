"""Fixtures shared across the test folders: the fake android phone behind a private real
adb server (ANDROID_ADB_SERVER_PORT and HOME set, never 5037). tests/platforms overrides
``adb_server`` to run once per adb binary found."""

from __future__ import annotations

import signal
from collections.abc import Iterator
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
