"""The Android parsers against recorded outputs: Android 13 and 10 meminfo, a Pixel's and
a Samsung's dumpsys battery, after unplug, with log text after the block, /proc stats."""

from __future__ import annotations

import pytest

from devicelab.samplers.android import (
    CpuTicks,
    cpu_pct,
    parse_battery,
    parse_current_now,
    parse_meminfo,
    parse_pid_ticks,
    parse_proc_stat,
)
from devicelab.testing.fake_adbd import (
    BATTERY,
    BATTERY_SAMSUNG,
    MEMINFO,
    MEMINFO_ANDROID10,
    UPDATES_STOPPED,
)


def test_meminfo_of_android_13_has_pss_rss_and_swap() -> None:
    info = parse_meminfo(MEMINFO.format(pid=4242, package="app.messaging.test"))
    assert info is not None
    assert (info.pid, info.pss_kb, info.rss_kb, info.swap_pss_kb) == (4242, 80929, 200948, 746)


def test_meminfo_of_android_10_has_total_and_no_rss() -> None:
    info = parse_meminfo(MEMINFO_ANDROID10.format(pid=7, package="app.messaging.test"))
    assert info is not None
    assert (info.pss_kb, info.rss_kb, info.swap_pss_kb) == (46672, None, 536)


def test_meminfo_of_an_app_that_is_not_running_is_none_and_garbage_raises() -> None:
    assert parse_meminfo("No process found for: app.messaging.test\n") is None
    with pytest.raises(ValueError):
        parse_meminfo("Can't find service: meminfo\n")


def test_battery_of_a_pixel() -> None:
    reading = parse_battery(BATTERY)
    assert reading.level_pct == 85 and reading.voltage_mv == 4213
    assert reading.temperature_c == pytest.approx(29.1)  # tenths of a degree
    assert reading.charge_mah == 3713  # µAh
    assert reading.charging is True and reading.plugged is True
    assert not reading.updates_stopped


def test_battery_of_a_samsung_ignores_vendor_lines_and_log_text() -> None:
    reading = parse_battery(BATTERY_SAMSUNG + "\nsome log text: level 3\n")
    assert reading.level_pct == 71 and reading.temperature_c == pytest.approx(31.2)
    assert reading.charge_mah == 2907  # the AOSP "Charge counter", not Samsung's duplicate


def test_battery_after_unplug_is_marked_and_reports_no_charger() -> None:
    header, _, rest = BATTERY.partition("\n")
    text = f"{header}\n{UPDATES_STOPPED}{rest.replace('USB powered: true', 'USB powered: false')}"
    reading = parse_battery(text)
    assert reading.updates_stopped and reading.plugged is False
    samples = reading.samples(1.0, "dumpsys battery")
    assert all("updates stopped" in s.note for s in samples)
    with pytest.raises(ValueError):
        parse_battery("Can't find service: battery\n")


def test_current_now_in_microamps_or_milliamps_and_unreadable() -> None:
    assert parse_current_now("-512000\n") == -512
    assert parse_current_now("389\n") == 389  # a vendor that reports mA
    assert parse_current_now("cat: current_now: Permission denied\n") is None
    assert parse_current_now("") is None


def test_cpu_from_proc_stat_deltas() -> None:
    before = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    after = parse_proc_stat("cpu  180 0 70 1000 50 0 0 0 0 0\n")
    line = "4242 (app.messa ging) S 1 1 0 0 -1 0 0 0 0 0 {u} {s} 0 0 20 0 1 0 1 1 1"
    app0 = parse_pid_ticks(line.format(u=10, s=5))
    app1 = parse_pid_ticks(line.format(u=40, s=5))
    assert (app0, app1) == (15, 45)
    app, busy = cpu_pct(CpuTicks(*before, app0), CpuTicks(*after, app1))
    assert (app, busy) == (10.0, 33.33)
    assert cpu_pct(CpuTicks(*before, 50), CpuTicks(*after, 3))[0] is None  # restarted
