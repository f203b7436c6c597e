"""Device states as ``devicelab devices`` reports them, from the real adb server.

The fakes speak the adb wire protocol; the states come from the adb server's own listing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import DeviceUnreachable
from devicelab.models import Inventory
from devicelab.platforms.android import AdbServer
from devicelab.platforms.state import device_states
from devicelab.testing.fake_adbd import FakeAdbd


def _inventory(**serials: str) -> Inventory:
    devices = {
        name: {"platform": "android", "model": "Pixel 6", "os": "Android 13", "serial": serial}
        for name, serial in serials.items()
    }
    return Inventory.model_validate({"devices": devices})


def _wait_listed(adb_server: Any, serial: str, state: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if f"{serial}\t{state}" in adb_server.run("devices").stdout:
            return
        time.sleep(0.1)
    pytest.fail(f"adb never listed {serial} as {state}")


def test_online_unauthorized_and_absent_come_from_the_adb_server(
    adb_server: Any, fake: FakeAdbd
) -> None:
    with FakeAdbd(authorized=False) as locked:
        adb_server.run("connect", locked.serial, check=False)
        _wait_listed(adb_server, locked.serial, "unauthorized")
        try:
            inventory = _inventory(
                phone=fake.serial, locked=locked.serial, gone="127.0.0.1:1", spare="REPLACE-WITH-X"
            )
            states = {s.device.id: (s.state, s.detail) for s in device_states(inventory)}
        finally:
            adb_server.run("disconnect", locked.serial, check=False)
    assert states["phone"] == ("online", "")
    assert states["locked"][0] == "unauthorized"
    assert "Allow USB debugging" in states["locked"][1]
    assert states["gone"] == ("absent", "not attached: check the cable, or `adb connect HOST:PORT`")
    assert states["spare"][0] == "absent" and "serial in the inventory" in states["spare"][1]


def test_devices_command_shows_the_state_and_no_server_is_unknown(
    adb_server: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "devices:\n  phone:\n    platform: android\n    model: Pixel 6\n"
        f"    os: Android 13\n    serial: '{fake.serial}'\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "devicelab", "devices", "--json", "--inventory", str(inventory)],
        capture_output=True,
        text=True,
        env=adb_server.env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["state"] == "online"


def test_an_unreachable_server_is_device_unreachable_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # adbutils would start a server; make its adb a program that cannot.
    broken = tmp_path / "adb"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("ADBUTILS_ADB_PATH", str(broken))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "1")
    with pytest.raises(DeviceUnreachable, match=r"no adb server answers on 127\.0\.0\.1:1") as err:
        AdbServer().states()
    assert "adb start-server" in err.value.hint
    [state] = device_states(_inventory(phone="ABC"))
    assert state.state == "unknown" and "adb start-server" in state.detail


def test_something_else_on_the_adb_port_is_named_and_devices_exits_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket
    import threading

    def answer_http(listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with client:
                client.recv(100)
                client.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        threading.Thread(target=answer_http, args=(listener,), daemon=True).start()
        port = str(listener.getsockname()[1])
        monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", port)
        monkeypatch.setenv("HOME", str(tmp_path))
        with pytest.raises(DeviceUnreachable) as caught:
            AdbServer().states()
        assert f"something that is not an adb server answers on 127.0.0.1:{port}" in str(
            caught.value
        )
        assert "ANDROID_ADB_SERVER_PORT" in caught.value.hint
        assert "install adb" not in caught.value.hint

        inventory = tmp_path / "inventory.yaml"
        inventory.write_text(
            "devices:\n  phone:\n    platform: android\n    model: Pixel 6\n"
            "    os: Android 13\n    serial: ABC\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "devicelab", "devices", "--inventory", str(inventory)],
            capture_output=True, text=True, env={**os.environ, "DEVICELAB_STATE": str(tmp_path)},
            timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "unknown  something that is not an adb server answers" in done.stdout
    [error] = done.stderr.splitlines()
    assert error.startswith("devicelab: error: no device's state could be read: something")
