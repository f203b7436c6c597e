"""`devicelab doctor` looks at the Appium devicelab starts (APPIUM_HOME: tools/appium) and
says which phone drivers are in it, with the command that adds a missing one; and at the
tunneld through which iOS 17+ iPhones give their CPU and memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devicelab.doctor import Finding, diagnose


def _package(home: Path, name: str, manifest: dict[str, object]) -> None:
    folder = home / "node_modules" / name
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"name": name, **manifest}))


def _appium_findings() -> dict[str, Finding]:
    return {f.name: f for f in diagnose() if f.name.startswith("appium")}


def test_the_drivers_of_devicelabs_appium_are_listed_and_a_missing_one_has_its_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "appium-home"
    home.mkdir()
    deps = {"appium": "3.8.0", "appium-uiautomator2-driver": "5.0.0", "left-pad": "1.3.0"}
    (home / "package.json").write_text(json.dumps({"dependencies": deps}))
    _package(home, "appium", {"version": "3.8.0"})
    (home / "node_modules" / ".bin").mkdir()
    (home / "node_modules" / ".bin" / "appium").write_text("#!/bin/sh\n")
    meta = {"driverName": "uiautomator2", "automationName": "UiAutomator2"}
    _package(home, "appium-uiautomator2-driver", {"version": "5.0.0", "appium": meta})
    _package(home, "left-pad", {"version": "1.3.0"})  # a dependency that is no driver
    monkeypatch.setenv("DEVICELAB_APPIUM_HOME", str(home))

    found = _appium_findings()
    assert found["appium"].found
    assert found["appium"].detail == f"{home}: appium 3.8.0; drivers: uiautomator2"
    android = found["appium driver: uiautomator2"]
    assert android.found and android.detail == "appium-uiautomator2-driver 5.0.0"
    ios = found["appium driver: xcuitest"]
    assert not ios.found and not ios.required
    assert "npm install --save-exact appium-xcuitest-driver" in ios.fix
    assert ios.needed_for.startswith("ios devices")


def test_no_appium_anywhere_says_how_to_get_devicelabs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICELAB_APPIUM_HOME", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no appium on PATH either
    found = _appium_findings()
    assert list(found) == ["appium"]
    assert not found["appium"].found and found["appium"].fix.startswith("./dev/setup")
    assert "nothing-here" in found["appium"].detail


def test_tunneld_is_found_where_devicelab_asks_it_and_missing_with_its_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        monkeypatch.setenv("DEVICELAB_TUNNELD", f"127.0.0.1:{port}")
        (tunneld,) = [f for f in diagnose() if f.name == "tunneld"]
        assert tunneld.found and tunneld.detail == f"127.0.0.1:{port} answers"
    (tunneld,) = [f for f in diagnose() if f.name == "tunneld"]  # now nothing listens
    assert not tunneld.found and not tunneld.required
    assert "sudo pymobiledevice3 remote tunneld" in tunneld.fix
    monkeypatch.setenv("DEVICELAB_TUNNELD", "nonsense")
    (tunneld,) = [f for f in diagnose() if f.name == "tunneld"]
    assert not tunneld.found and "HOST:PORT" in tunneld.detail
