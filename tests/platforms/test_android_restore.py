"""Putting a phone back (an outside tester's findings): a second Ctrl-C during the restore,
a user's own fix after a crash, what a dead run left, shown. adbutils → the real adb
server → the fake device (adbd), the journal on disk.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devicelab.journal import HeldInterrupt, Journal, held_interrupts
from devicelab.models import Device, Inventory
from devicelab.platforms.android import AdbServer
from devicelab.platforms.android_device import AndroidDevice
from devicelab.platforms.state import device_states
from devicelab.testing.fake_adbd import FakeAdbd, ShellResult

CORPORATE = "proxy.corp.example:3128"

#: A run that routes the phone and dies without any cleanup (kill -9).
_ROUTE_AND_DIE = """
import os, sys
from devicelab.journal import Journal
from devicelab.models import Device
from devicelab.platforms.android_device import AndroidDevice
device = Device(id="phone", platform="android", model="Pixel 6", os="Android 13",
                serial=sys.argv[1])
AndroidDevice(device, Journal(sys.argv[2])).create().route(18080)
os._exit(9)
"""


def _phone(serial: str) -> Device:
    return Device(id="phone", platform="android", model="Pixel 6", os="Android 13", serial=serial)


def _attach(adb_server: Any, fake: FakeAdbd, path: Path) -> AndroidDevice:
    server = AdbServer(port=adb_server.port)
    return AndroidDevice(_phone(fake.serial), Journal(path), server=server).create()


def _die_routed(adb_server: Any, fake: FakeAdbd, path: Path) -> None:
    args = [sys.executable, "-c", _ROUTE_AND_DIE, fake.serial, str(path)]
    done = subprocess.run(args, env=adb_server.env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 9, done.stderr
    assert fake.settings["global"]["http_proxy"] == "127.0.0.1:18080"


def test_a_second_ctrl_c_while_the_phone_is_put_back_lets_every_step_finish(
    adb_server: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    path = tmp_path / "journal.jsonl"
    fake.settings["global"].update(http_proxy=CORPORATE, stay_on_while_plugged_in="1")
    phone = _attach(adb_server, fake, path)
    phone.route(8080)
    restore = f"settings put global http_proxy {CORPORATE}"

    def ctrl_c_during_the_restore(command: str) -> ShellResult:
        os.kill(os.getpid(), signal.SIGINT)  # lands while the main thread waits on adb
        time.sleep(0.5)
        fake.settings["global"]["http_proxy"] = CORPORATE
        return ShellResult()

    fake.on(restore, ctrl_c_during_the_restore)
    try:
        with pytest.raises(KeyboardInterrupt):  # raised again once the phone is back
            phone.close()
    finally:
        fake.off(restore)
    assert fake.settings["global"]["http_proxy"] == CORPORATE
    assert fake.settings["global"]["stay_on_while_plugged_in"] == "1"
    assert fake.reverses == {}, "adb reverse left behind"
    assert Journal(path).pending() == [] and phone.left == []
    Journal(path).claim(fake.serial, "in use").release()  # the phone was let go


def test_held_interrupts_deliver_once_after_the_block_and_nest() -> None:
    done: list[str] = []
    with pytest.raises(HeldInterrupt), held_interrupts():
        with held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("inner")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done.append("outer")
    assert done == ["inner", "outer"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_recovery_leaves_what_the_user_set_by_hand_after_a_crash_and_says_so(
    adb_server: Any, fake: FakeAdbd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.jsonl"
    fake.settings["global"].update(http_proxy=CORPORATE, stay_on_while_plugged_in="1")
    _die_routed(adb_server, fake, path)
    # The user mended the phone by hand: a proxy and a screen setting of their own.
    fake.settings["global"].update(http_proxy="10.9.9.9:8888", stay_on_while_plugged_in="3")

    with caplog.at_level(logging.INFO):
        phone = _attach(adb_server, fake, path)  # recovers what the dead run left
    phone.close()
    assert fake.settings["global"]["http_proxy"] == "10.9.9.9:8888"
    assert fake.settings["global"]["stay_on_while_plugged_in"] == "3"
    assert fake.reverses == {}  # still devicelab's: removed
    assert Journal(path).pending() == []
    assert f"left http_proxy on {fake.serial} as it is (10.9.9.9:8888)" in caplog.text
    assert f"left stay_on_while_plugged_in on {fake.serial} as it is (3)" in caplog.text


def test_recovery_says_what_it_puts_back_and_devices_shows_it_before(
    adb_server: Any, fake: FakeAdbd, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("DEVICELAB_STATE", str(tmp_path))
    path = tmp_path / "journal.jsonl"
    fake.settings["global"].update(http_proxy=CORPORATE, stay_on_while_plugged_in="1")
    _die_routed(adb_server, fake, path)

    inventory = Inventory.model_validate({"devices": {"phone": _phone(fake.serial).model_dump()}})
    [state] = device_states(inventory)
    assert state.state == "online"
    line = state.left_line()
    assert "left changed by a devicelab run that ended without putting it back (pid" in line
    for what in ("adb reverse tcp:18080", f"http_proxy 127.0.0.1:18080 (was {CORPORATE})",
                 "stay_on_while_plugged_in 7 (was 1)", "the next devicelab run on it"):  # fmt: skip
        assert what in line, line
    listed = json.loads(json.dumps(state.as_dict()))["left_changed"]
    assert [item["kind"] for item in listed] == [
        "android.reverse", "android.http_proxy", "android.setting"
    ]  # fmt: skip

    with caplog.at_level(logging.WARNING, logger="devicelab.journal"):
        _attach(adb_server, fake, path).close()
    said = [r.getMessage() for r in caplog.records if "putting back" in r.getMessage()]
    assert len(said) == 1 and f"left on {fake.serial}: adb reverse tcp:18080" in said[0]
    assert fake.settings["global"]["http_proxy"] == CORPORATE
    assert device_states(inventory)[0].left_changed == []


def test_a_run_recovers_its_own_phone_only(
    adb_server: Any, fake: FakeAdbd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A farm starts a run per phone: each put back every phone's leftovers at once, so the
    # siblings raced on the same entries and logged "left ... as it is" about each other.
    path = tmp_path / "journal.jsonl"
    _die_routed(adb_server, fake, path)
    with adb_server.phone() as other, caplog.at_level(logging.INFO):
        _attach(adb_server, other, path).close()
    assert fake.settings["global"]["http_proxy"] == "127.0.0.1:18080"  # not the other's
    assert {e.target for e in Journal(path).pending()} == {fake.serial}
    phone = _attach(adb_server, fake, path)  # its own run puts it back
    phone.close()
    assert fake.settings["global"]["http_proxy"] == ":0" and fake.reverses == {}
    assert Journal(path).pending() == []
