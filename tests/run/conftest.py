"""Fixtures shared by the run tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devicelab.platforms.appium import AppiumServer
from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import FakeAdbd
from devicelab.testing.standins import lab_state, webview_capabilities


@pytest.fixture(scope="module")
def adb(request: pytest.FixtureRequest) -> Iterator[PrivateAdbServer]:
    """A DEVICELAB_STATE of the test module's own (cluster and journal) and a private adb
    server on a free port (HOME in the state folder, so no key lands in ~/.android and no
    stray server starts on 5037); ``adb.env`` runs devicelab processes in that lab. The
    cluster and the adb server are stopped after."""
    name = request.module.__name__.rsplit(".", maxsplit=1)[-1].removeprefix("test_")
    with lab_state(f"dl-{name}-") as env:
        try:
            server = PrivateAdbServer(Path(env["HOME"]))
        except FileNotFoundError as exc:
            pytest.skip(f"{exc}")
        server.env["DEVICELAB_STATE"] = env["DEVICELAB_STATE"]
        with server:
            yield server


@pytest.fixture(scope="module")
def appium(standins: None, adb: PrivateAdbServer) -> Iterator[AppiumServer]:
    """An Appium server (tools/appium) for the module, its log in the module's state
    folder (modules with a ``lab_env`` of their own define theirs); skips the test when the
    WebView stand-in cannot run here (``standins``)."""
    with AppiumServer(log_file=Path(adb.env["DEVICELAB_STATE"]) / "appium.log") as server:
        yield server


@pytest.fixture(scope="module")
def phone(adb: PrivateAdbServer) -> Iterator[FakeAdbd]:
    """One fake-adbd Android phone behind the module's adb server."""
    with adb.phone() as fake:
        yield fake


@pytest.fixture(scope="module")
def phone_inventory(
    app_build: Path, adb: PrivateAdbServer, phone: FakeAdbd, appium: AppiumServer
) -> Path:
    """An inventory.yaml (in the module's state folder) whose one device, ``phone``, is
    :func:`phone`, driven through the module's Appium; skips the test when the test app
    is not built (``app_build``)."""
    path = Path(adb.env["DEVICELAB_STATE"]) / "inventory.yaml"
    path.write_text(yaml.safe_dump({"devices": {"phone": phone_entry(appium.url, phone.serial)}}))
    return path


def phone_entry(appium_url: str, serial: str) -> dict[str, Any]:
    """The inventory entry of a fake-adbd Android phone: the test app, Appium with the
    WEBVIEW stand-in's capabilities."""
    return {
        "platform": "android", "model": "Pixel 6 (fake adbd)", "os": "Android 13",
        "serial": serial, "app": {"id": "app.messaging.test"},
        "appium": {"url": appium_url, "capabilities": webview_capabilities()},
    }  # fmt: skip


def farm_phone(appium_url: str, serial: str) -> dict[str, Any]:
    """:func:`phone_entry` for battery-farm tests: with a power cut made by hand."""
    return {**phone_entry(appium_url, serial), "power": {"kind": "manual"}}
