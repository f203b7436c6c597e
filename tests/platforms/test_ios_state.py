"""iPhone states as ``devicelab devices`` reports them, from a usbmuxd that speaks the
real protocol (the fake) through pymobiledevice3.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devicelab.errors import DeviceUnreachable, ToolMissing
from devicelab.models import Inventory
from devicelab.platforms.ios import Lockdownd, Usbmuxd
from devicelab.platforms.state import device_states
from devicelab.testing.fake_usbmuxd import FakeIPhone, FakeUsbmuxd

pytest.importorskip("pymobiledevice3")

UDID = "00008030-001A2B3C4D5E802E"
WIFI = "00008110-000A1B2C3D4E5F60"
LOCKED = "00008101-000C1D2E3F405162"


def _inventory(**udids: str) -> Inventory:
    devices = {
        name: {"platform": "ios", "model": "iPhone 11", "os": "iOS 17.5", "udid": udid}
        for name, udid in udids.items()
    }
    return Inventory.model_validate({"devices": devices})


def _states(inventory: Inventory) -> dict[str, tuple[str, str]]:
    return {s.device.id: (s.state, s.detail) for s in device_states(inventory)}


def test_online_unpaired_and_absent_come_from_usbmuxd(usbmuxd: FakeUsbmuxd) -> None:
    usbmuxd.attach(FakeIPhone(UDID))
    usbmuxd.attach(FakeIPhone(UDID, connection="Network"))
    usbmuxd.attach(FakeIPhone(WIFI, connection="Network"))
    usbmuxd.attach(FakeIPhone(LOCKED), paired=False)
    states = _states(
        _inventory(
            both=UDID,
            wifi=WIFI,
            locked=LOCKED,
            gone="00008030-0000000000000001",
            spare="00008030-REPLACE-WITH-UDID-1",
        )
    )
    assert states["both"] == ("online", "over USB and Wi-Fi")
    assert states["wifi"] == ("online", "over Wi-Fi")
    assert states["locked"][0] == "unpaired"
    assert states["locked"][1].startswith("over USB, not paired: unlock the iPhone")
    assert "tap Trust" in states["locked"][1]
    assert states["gone"] == (
        "absent",
        "not attached: plug the iPhone in, unlock it, or turn on Wi-Fi sync",
    )
    assert states["spare"] == (
        "absent",
        "set this device's udid in the inventory (`pymobiledevice3 usbmux list`)",
    )
    # one ListDevices for the whole inventory, and one ReadPairRecord per listed phone
    assert usbmuxd.requests.count("ListDevices") == 1
    assert usbmuxd.requests.count("ReadPairRecord") == 3


def test_a_udid_listed_without_its_dash_still_matches(usbmuxd: FakeUsbmuxd) -> None:
    usbmuxd.attach(FakeIPhone(UDID.replace("-", "")))
    assert _states(_inventory(phone=UDID.lower())) == {"phone": ("online", "over USB")}


def test_states_follow_attach_and_detach(usbmuxd: FakeUsbmuxd) -> None:
    inventory = _inventory(phone=UDID)
    assert _states(inventory)["phone"][0] == "absent"
    usbmuxd.attach(FakeIPhone(UDID), paired=False)
    assert _states(inventory)["phone"][0] == "unpaired"
    usbmuxd.pair_records[UDID] = {"HostID": "H"}  # the user tapped Trust
    assert _states(inventory)["phone"][0] == "online"
    usbmuxd.detach(UDID)
    assert _states(inventory)["phone"][0] == "absent"


def test_no_usbmuxd_is_unknown_with_the_fix(no_usbmuxd: str) -> None:
    with pytest.raises(DeviceUnreachable, match=r"no usbmuxd answers on 127\.0\.0\.1:") as err:
        Usbmuxd().states()
    assert err.value.message.endswith("nothing listens there")
    assert "apt-get install -y usbmuxd" in err.value.hint
    [state] = device_states(_inventory(phone=UDID))
    assert state.state == "unknown"
    assert no_usbmuxd in state.detail and "plug the iPhone in" in state.detail


@pytest.fixture
def not_usbmuxd() -> Iterator[str]:
    """A loopback server that answers anything with an HTTP error; returns its address."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_a_peer_that_is_not_usbmuxd_is_unreachable(not_usbmuxd: str) -> None:
    with pytest.raises(DeviceUnreachable, match=f"usbmuxd on {not_usbmuxd} failed: ") as err:
        Usbmuxd(not_usbmuxd).states()
    assert err.value.command == "pymobiledevice3 usbmux list"
    assert "systemctl restart usbmuxd" in err.value.hint


def test_without_pymobiledevice3_the_fix_is_the_ios_extra(
    monkeypatch: pytest.MonkeyPatch, no_usbmuxd: str
) -> None:
    monkeypatch.setitem(sys.modules, "pymobiledevice3", None)
    with pytest.raises(ToolMissing) as err:
        Usbmuxd().states()
    assert err.value.hint == "pip install 'devicelab[ios]'"
    [state] = device_states(_inventory(phone=UDID))
    assert state.state == "unknown" and "devicelab[ios]" in state.detail


def test_states_work_under_a_running_event_loop(usbmuxd: FakeUsbmuxd) -> None:
    usbmuxd.attach(FakeIPhone(UDID))

    async def from_async_code() -> list[str]:
        return list(Usbmuxd().states())

    assert asyncio.run(from_async_code()) == [UDID]


def test_lockdownd_gives_model_and_ios_version(usbmuxd: FakeUsbmuxd) -> None:
    usbmuxd.attach(FakeIPhone(UDID), paired=False)  # values need no pairing
    assert Lockdownd(UDID).info() == {
        "udid": UDID,
        "model": "iPhone12,1",
        "os": "iOS 17.5.1",
        "name": "iPhone",
    }
    assert usbmuxd.requests.count("Connect") == 1


def test_lockdownd_without_usbmuxd_names_the_fix(no_usbmuxd: str) -> None:
    with pytest.raises(DeviceUnreachable, match=f"no usbmuxd answers on {no_usbmuxd}") as err:
        Lockdownd(UDID).info()
    assert "apt-get install -y usbmuxd" in err.value.hint


def test_lockdownd_of_an_absent_or_refusing_phone_is_unreachable(usbmuxd: FakeUsbmuxd) -> None:
    with pytest.raises(DeviceUnreachable, match=f"usbmuxd does not list {UDID}") as err:
        Lockdownd(UDID).values()
    assert err.value.serial == UDID
    usbmuxd.attach(FakeIPhone(UDID, lockdown=False))
    with pytest.raises(DeviceUnreachable, match=f"cannot reach lockdownd on {UDID}"):
        Lockdownd(UDID).values()


def test_devices_command_shows_ios_states(usbmuxd: FakeUsbmuxd, tmp_path: Path) -> None:
    usbmuxd.attach(FakeIPhone(UDID))
    usbmuxd.attach(FakeIPhone(LOCKED, connection="Network"), paired=False)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "devices:\n"
        + "".join(
            f"  {name}:\n    platform: ios\n    model: iPhone 11\n    os: iOS 17.5\n"
            f"    udid: '{udid}'\n"
            for name, udid in [("phone", UDID), ("locked", LOCKED), ("spare", "REPLACE-WITH-X")]
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "devicelab", "devices", "--json", "--inventory", str(inventory)],
        capture_output=True,
        text=True,
        env={**os.environ, **usbmuxd.env, "HOME": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    states = {d["id"]: (d["state"], d["detail"]) for d in json.loads(done.stdout)}
    assert states["phone"] == ("online", "over USB")
    assert states["locked"][0] == "unpaired" and states["locked"][1].startswith("over Wi-Fi")
    assert states["spare"][0] == "absent"
