"""A phone whose Appium driver is not installed is told the package it needs."""

from __future__ import annotations

import pytest

from devicelab.errors import ToolMissing
from devicelab.lab_phone import check_appium
from devicelab.models import Device
from devicelab.platforms.appium_server import free_port


@pytest.mark.parametrize(
    ("platform", "automation", "package"),
    [
        ("ios", "XCUITest", "appium-xcuitest-driver on a Mac"),
        ("android", "UiAutomator2", "appium-uiautomator2-driver (docs"),
        ("android", "Flutter", "<its npm package>"),
    ],
)
def test_the_hint_names_the_driver_of_the_automation_name(
    platform: str, automation: str, package: str
) -> None:
    # An iPhone's run said "e.g. appium-uiautomator2-driver": the Android one.
    ids = {"udid": "00008030-001A2B3C4D5E802E"} if platform == "ios" else {"serial": "x"}
    phone = Device.model_validate(
        {"id": "p", "platform": platform, "model": "m", "os": "o", **ids,
         "proxy": {"listen": "10.0.0.2:8899", "allow": ["10.0.0.0/24"]},
         "appium": {"url": f"http://127.0.0.1:{free_port()}",
                    "capabilities": {"platformName": platform,
                                     "appium:automationName": automation}}}
    )  # fmt: skip
    with pytest.raises(ToolMissing, match=f"automationName {automation}") as raised:
        check_appium(phone)
    assert f"npm install --save-exact {package}" in str(raised.value.hint)
