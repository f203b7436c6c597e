"""An iPhone run takes its phone alone and puts back what a run that died left on it
(the hub port battery_drain switched off), through the real journal and the fake usbmuxd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devicelab.errors import EnvironmentProblem
from devicelab.journal import Entry, Journal
from devicelab.models import Inventory
from devicelab.platforms.ios_device import IosDevice
from devicelab.platforms.state import device_states
from devicelab.scenarios.battery_drain import POWER_KIND
from devicelab.testing.fake_usbmuxd import FakeIPhone, FakeUsbmuxd

pytest.importorskip("pymobiledevice3")

UDID = "00008030-001A2B3C4D5E802E"
OTHER = "00008110-000A1B2C3D4E5F60"
_CUT_AND_DIE = """
import sys
from devicelab.journal import Journal
what = f"hub 1-1 port {sys.argv[3]} switched off (uhubctl)"
Journal(sys.argv[1]).record("power.uhubctl_off", sys.argv[2],
                            {"hub": "1-1", "port": int(sys.argv[3]), "what": what})
"""
_HOLD = """
import sys, time
from devicelab.journal import Journal
claim = Journal(sys.argv[1]).claim(sys.argv[2], "in use")
print("held", flush=True)
time.sleep(60)
"""


def _cut_and_die(path: Path, udid: str, port: int) -> None:
    args = [sys.executable, "-c", _CUT_AND_DIE, str(path), udid, str(port)]
    subprocess.run(args, check=True, timeout=30)


def _inventory() -> Inventory:
    phone = {"platform": "ios", "model": "iPhone 11", "os": "iOS 17.5", "udid": UDID}
    return Inventory.model_validate({"devices": {"iphone": phone}})


def _journal(path: Path, switched_on: list[int]) -> Journal:
    def on(entry: Entry) -> None:
        switched_on.append(int(entry.data["port"]))

    return Journal(path, undoers={POWER_KIND: on})


def test_an_iphone_run_switches_on_the_hub_port_a_run_that_died_left_off(
    usbmuxd: FakeUsbmuxd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICELAB_STATE", str(tmp_path))
    path = tmp_path / "journal.jsonl"
    usbmuxd.attach(FakeIPhone(UDID))
    _cut_and_die(path, UDID, 2)
    _cut_and_die(path, OTHER, 3)  # another phone's: not this run's to touch
    # Before: `devicelab devices` says what was left, in words.
    [state] = device_states(_inventory())
    assert "hub 1-1 port 2 switched off (uhubctl)" in state.left_line()
    switched_on: list[int] = []
    phone = IosDevice(_inventory().devices["iphone"], journal=_journal(path, switched_on))
    phone.create()
    phone.close()
    assert switched_on == [2]
    assert [e.target for e in Journal(path).pending()] == [OTHER]


def test_one_run_at_a_time_takes_an_iphone(usbmuxd: FakeUsbmuxd, tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    usbmuxd.attach(FakeIPhone(UDID))
    device = _inventory().devices["iphone"]
    first = IosDevice(device, journal=Journal(path)).create()
    with pytest.raises(EnvironmentProblem, match=f"{UDID} is already in use by this process"):
        IosDevice(device, journal=Journal(path)).create()
    first.close()
    IosDevice(device, journal=Journal(path)).create().close()


def test_recovery_leaves_a_device_another_live_run_has_taken(tmp_path: Path) -> None:
    """That run put back the dead run's change when it took the device, or is working on
    the same thing (it cut the same hub port again): undoing it would cut its run short."""
    path = tmp_path / "journal.jsonl"
    _cut_and_die(path, UDID, 2)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), UDID], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        switched_on: list[int] = []
        _journal(path, switched_on).recover()
        assert switched_on == []
    finally:
        holder.kill()
        holder.wait()
    _journal(path, switched_on).recover()
    assert switched_on == [2]
