"""A cloud grid's Appium URL carries user:password: no message shows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicelab.errors import DeviceLabError, DeviceUnreachable, ToolMissing
from devicelab.lab_phone import _appium_url, check_appium
from devicelab.models import Device
from devicelab.platforms.appium_server import free_port
from devicelab.teardown import Teardown

SECRET = "GridS3cretKey"


def _phone(url: str) -> Device:
    return Device.model_validate(
        {"id": "p", "platform": "android", "model": "m", "os": "o", "serial": "x",
         "proxy": {"listen": "10.0.0.2:8899", "allow": ["10.0.0.0/24"]},
         "appium": {"url": url, "capabilities": {"platformName": "android",
                                                 "appium:automationName": "UiAutomator2"}}}
    )  # fmt: skip


def _said(exc: DeviceLabError) -> str:
    return f"{exc} {exc.hint}"


def test_no_server_at_a_remote_url(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnreachable) as raised:
        check_appium(_phone(f"http://griduser:{SECRET}@127.0.0.2:{free_port()}/"))
    assert SECRET not in _said(raised.value)
    assert "***@127.0.0.2" in str(raised.value)


def test_something_else_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib cannot send a URL's user:password, so what answers is set here: a 404.
    from devicelab.platforms import appium_server

    monkeypatch.setattr(appium_server, "server_status", lambda url: "HTTP 404")
    with pytest.raises(DeviceUnreachable) as raised:
        check_appium(_phone(f"http://griduser:{SECRET}@127.0.0.1:{free_port()}/"))
    assert SECRET not in _said(raised.value)
    assert "not an Appium server" in str(raised.value)


def test_no_local_appium_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICELAB_APPIUM_HOME", str(tmp_path / "no-appium"))
    with pytest.raises(ToolMissing) as raised:
        check_appium(_phone(f"http://griduser:{SECRET}@127.0.0.1:{free_port()}/"))
    assert SECRET not in _said(raised.value)


def test_starting_a_local_appium_says_where_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICELAB_APPIUM_HOME", str(tmp_path / "no-appium"))
    said: list[str] = []
    url = f"http://griduser:{SECRET}@127.0.0.1:{free_port()}/"
    with pytest.raises(DeviceLabError):  # no Appium installed there: it cannot start
        _appium_url(Teardown(said.append), url, tmp_path / "out", said.append)
    assert said and "no Appium server answers at http://***@127.0.0.1" in said[0]
    assert not [line for line in said if SECRET in line], said
