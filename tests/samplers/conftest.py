"""Fixtures of the sampler tests: a private real adb server with the fake phone behind it
(ANDROID_ADB_SERVER_PORT and HOME set, never 5037), and a real headless Chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import FakeAdbd


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateAdbServer]:
    """A private adb server, killed at the end; the env points adbutils at it."""
    try:
        server = PrivateAdbServer(tmp_path_factory.mktemp("adb-home"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with server, server.environ():
        yield server


@pytest.fixture
def fake(adb_server: PrivateAdbServer) -> Iterator[FakeAdbd]:
    """A fake phone the adb server is connected to."""
    with adb_server.phone() as device:
        yield device


@pytest.fixture
def device(adb_server: PrivateAdbServer, fake: FakeAdbd) -> Any:
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
