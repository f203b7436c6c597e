"""iOS: the IORegistry battery dict and sysmontap rows, parsed (recorded shapes; no
iPhone here), and the sampler's decisions with the live calls replaced by those records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import DeviceUnreachable
from devicelab.samplers import SampleLog
from devicelab.samplers.ios import (
    SYSMONTAP_SILENT,
    IosSampler,
    _Reading,
    parse_battery,
    signed_milliamps,
)
from devicelab.samplers.ios_sysmon import app_usage

# IOPMPowerSource as `pymobiledevice3 diagnostics battery single` prints it (iOS 16/17),
# trimmed to the keys that matter; CurrentCapacity is a percent with MaxCapacity 100.
DISCHARGING = {
    "AppleRawCurrentCapacity": 2511, "AppleRawMaxCapacity": 2815, "BatteryInstalled": True,
    "CurrentCapacity": 84, "MaxCapacity": 100, "CycleCount": 412, "DesignCapacity": 3110,
    "ExternalChargeCapable": False, "ExternalConnected": False, "FullyCharged": False,
    "InstantAmperage": 18446744073709551108, "IsCharging": False, "Temperature": 3012,
    "Voltage": 3987, "UpdateTime": 1732850000,
}  # fmt: skip
CHARGING = {**DISCHARGING, "InstantAmperage": 1180, "IsCharging": True, "ExternalConnected": True}
# Older iOS: CurrentCapacity and MaxCapacity in mAh.
OLD_MAH = {"CurrentCapacity": 1520, "MaxCapacity": 1810, "InstantAmperage": -230,
           "Voltage": 3801, "Temperature": 2750, "IsCharging": False}  # fmt: skip
ROWS = [
    {"name": "SpringBoard", "pid": 64, "responsiblePID": 64, "cpuUsage": 1.5,
     "physFootprint": 61_000_000},
    {"name": "App", "pid": 812, "responsiblePID": 812, "cpuUsage": 30.0,
     "physFootprint": 52_400_000},
    # The app's WKWebView content, and Safari's (another app's): only the first counts.
    {"name": "com.apple.WebKit.WebContent", "pid": 815, "responsiblePID": 812,
     "cpuUsage": 18.0, "physFootprint": 100_000_000},
    {"name": "com.apple.WebKit.WebContent", "pid": 902, "responsiblePID": 901,
     "cpuUsage": 5.0, "physFootprint": 80_000_000},
]  # fmt: skip


def test_unsigned_64_bit_amperage_is_a_negative_current() -> None:
    assert signed_milliamps(18446744073709551108) == -508
    assert signed_milliamps(-508) == -508 and signed_milliamps(1180) == 1180
    assert signed_milliamps(True) is None and signed_milliamps("x") is None


def test_battery_dicts() -> None:
    reading = parse_battery(DISCHARGING)
    assert reading.level_pct == 84 and reading.current_ma == -508
    assert reading.voltage_mv == 3987 and reading.temperature_c == pytest.approx(30.12)
    assert reading.charging is False and reading.plugged is False
    assert parse_battery(CHARGING).charging is True
    assert parse_battery(OLD_MAH).level_pct == pytest.approx(83.98)
    with pytest.raises(ValueError):
        parse_battery({"Voltage": 3900})


def test_the_app_counts_with_the_webkit_processes_it_is_responsible_for() -> None:
    usage = app_usage(ROWS, "App", cpu_count=6)
    assert usage is not None
    # 52.4 + 100 MB: Safari's WebContent (80 MB) is not counted.
    assert (usage.pid, usage.cpu_pct, usage.footprint_mb) == (812, 8.0, 152.4)
    assert app_usage(ROWS, "Other") is None
    # A missing value makes the sum unknown, not smaller.
    partial = [{**ROWS[1]}, {**ROWS[2], "physFootprint": None}]
    usage = app_usage(partial, "App")
    assert usage is not None and usage.footprint_mb is None and usage.cpu_pct == 48.0


def _sampler(tmp_path: Path, rows: list[dict[str, Any]]) -> IosSampler:
    sampler = IosSampler(SampleLog(tmp_path / "s.jsonl"), "00008101-000A", process="App")

    async def recorded(*, battery: bool = True) -> _Reading:
        return _Reading(dict(DISCHARGING) if battery else None, rows, 6)

    sampler._ask = recorded  # type: ignore[method-assign]
    return sampler


def test_a_silent_sysmontap_is_a_gap_with_its_reason(tmp_path: Path) -> None:
    samples = _sampler(tmp_path, []).read_once()
    gaps = {s.metric: s.note for s in samples if s.value is None}
    assert gaps == {"cpu.app_pct": SYSMONTAP_SILENT, "memory.footprint_mb": SYSMONTAP_SILENT}
    assert "XCUITest" in SYSMONTAP_SILENT
    assert {s.metric: s.value for s in samples}["battery.current_ma"] == -508


def test_sysmontap_rows_become_cpu_and_memory_samples(tmp_path: Path) -> None:
    values = {s.metric: s.value for s in _sampler(tmp_path, ROWS).read_once()}
    assert values["cpu.app_pct"] == 8.0 and values["memory.footprint_mb"] == 152.4


def test_no_usbmuxd_is_device_unreachable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    sampler = IosSampler(SampleLog(tmp_path / "s.jsonl"), "00008101-000A", usbmux_address=closed)
    with pytest.raises(DeviceUnreachable, match="00008101-000A"):
        sampler.read_once()
