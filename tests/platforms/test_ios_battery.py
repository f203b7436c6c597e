"""The iPhone's battery through pymobiledevice3, end to end over the fake usbmuxd: a real
pairing session (TLS with the pair record's certificates), the diagnostics relay started
through lockdownd and reached through usbmuxd (TLS again), its IORegistry answer parsed
by devicelab's IosSampler into samples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import DeviceUnreachable
from devicelab.samplers.ios import IosSampler
from devicelab.samplers.log import SampleLog
from devicelab.testing.fake_lockdownd import DIAGNOSTICS_RELAY, IPHONE_BATTERY
from devicelab.testing.fake_usbmuxd import FakeIPhone, FakeUsbmuxd

pytest.importorskip("pymobiledevice3")

UDID = "00008030-001A2B3C4D5E802E"


def _sampler(mux: FakeUsbmuxd, tmp_path: Path) -> IosSampler:
    log = SampleLog(tmp_path / "samples.jsonl", t0=time.monotonic())
    return IosSampler(log, UDID, usbmux_address=mux.address)


def test_a_draining_battery_is_read_through_a_paired_session(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    levels = iter([85, 84])

    def draining() -> dict[str, Any]:
        return {**IPHONE_BATTERY, "CurrentCapacity": next(levels)}

    phone = FakeIPhone(UDID, battery=draining)
    usbmuxd.attach(phone)
    sampler = _sampler(usbmuxd, home)
    first = {s.metric: s.value for s in sampler.read_once()}
    second = {s.metric: s.value for s in sampler.read_once()}
    assert (first["battery.level_pct"], second["battery.level_pct"]) == (85.0, 84.0)
    assert first["battery.current_ma"] == -312.0  # sent as an unsigned 64-bit number
    assert first["battery.temperature_c"] == 30.5 and first["battery.charging"] == 0.0
    # The relay was started through lockdownd, one port per read.
    assert set(phone.lockdownd.services.values()) == {DIAGNOSTICS_RELAY}
    assert len(phone.lockdownd.services) == 2


def test_a_phone_that_does_not_trust_this_host_is_unreachable_with_the_fix(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    usbmuxd.attach(FakeIPhone(UDID), paired=False)
    with pytest.raises(DeviceUnreachable, match=f"{UDID} does not trust") as raised:
        _sampler(usbmuxd, home).read_once()
    assert "trust this computer" in raised.value.hint
    assert raised.value.serial == UDID


def test_a_phone_unplugged_mid_run_is_said_so_not_sent_to_trust_this_computer(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    usbmuxd.attach(FakeIPhone(UDID))
    sampler = _sampler(usbmuxd, home)
    sampler.read_once()
    usbmuxd.detach(UDID)
    with pytest.raises(DeviceUnreachable, match=f"no longer lists {UDID}: it was unplugged"):
        sampler.read_once()
    usbmuxd.attach(FakeIPhone(UDID), paired=False)  # back, but its pair record is gone
    with pytest.raises(DeviceUnreachable, match="does not trust this computer") as raised:
        sampler.read_once()
    assert "trust this computer" in raised.value.hint


def test_without_a_session_lockdownd_starts_no_service(usbmuxd: FakeUsbmuxd) -> None:
    phone = FakeIPhone(UDID)
    answer = phone.lockdown_answer({"Request": "StartService", "Service": DIAGNOSTICS_RELAY})
    assert answer["Error"] == "SessionInactive"
    assert phone.lockdownd.services == {}


def test_a_power_cut_needs_the_iphone_listed_over_wifi_too(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    from devicelab.scenarios.battery_drain import IOS_OVER_USB, _off_usb

    usbmuxd.attach(FakeIPhone(UDID))
    sampler = _sampler(usbmuxd, home)
    assert _off_usb(sampler) == (UDID, IOS_OVER_USB)  # uhubctl would cut its only link
    usbmuxd.attach(FakeIPhone(UDID, connection="Network"))
    assert _off_usb(sampler) == (UDID, "")
