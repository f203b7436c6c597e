"""AndroidSampler through the real adb server and the fake phone (recorded outputs), and
the battery simulation journalled and reset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from devicelab.journal import Journal
from devicelab.samplers import SampleLog
from devicelab.samplers.android import UNDOERS, UNPLUG_KIND, AndroidSampler, BatteryUnplugged
from devicelab.testing.fake_adbd import BATTERY_SAMSUNG, MEMINFO_ANDROID10, FakeAdbd

PKG = "com.example.app"


def _values(samples: list[Any]) -> dict[str, float | None]:
    return {s.metric: s.value for s in samples}


def test_two_readings_give_memory_cpu_and_battery(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    log = SampleLog(tmp_path / "samples.jsonl")
    sampler = AndroidSampler(log, device, PKG)
    first = _values(sampler.read_once())
    assert first["memory.pss_mb"] == pytest.approx(80929 * 1024 / 1e6, abs=1e-3)
    assert first["memory.rss_mb"] == pytest.approx(200948 * 1024 / 1e6, abs=1e-3)
    assert "cpu.app_pct" not in first  # a percentage needs two readings
    assert first["battery.level_pct"] == 85 and first["battery.current_ma"] == -512
    second = _values(sampler.read_once())
    assert (second["cpu.app_pct"], second["cpu.total_pct"]) == (10.0, 30.0)
    assert len(log.read()) == len(sampler.taken)


def test_android_10_meminfo_and_samsung_battery(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    fake.meminfo_text, fake.battery_text = MEMINFO_ANDROID10, BATTERY_SAMSUNG
    fake.current_now = None  # Permission denied
    values = _values(AndroidSampler(SampleLog(tmp_path / "s.jsonl"), device, PKG).read_once())
    assert "memory.rss_mb" not in values and values["memory.pss_mb"] > 40
    assert values["battery.level_pct"] == 71 and "battery.current_ma" not in values


def test_an_app_that_is_not_running_leaves_gaps(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    sampler = AndroidSampler(SampleLog(tmp_path / "s.jsonl"), device, "app.not.running",
                             battery=False)  # fmt: skip
    sampler.read_once()
    samples = sampler.read_once()
    gaps = {s.metric: s.note for s in samples if s.value is None}
    assert "no process found" in gaps["memory.pss_mb"]
    assert "not running" in gaps["cpu.app_pct"]
    assert _values(samples)["cpu.total_pct"] == 30.0


def test_unplug_is_journalled_first_and_reset_even_on_an_error(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl", UNDOERS)
    sampler = AndroidSampler(SampleLog(tmp_path / "s.jsonl"), device, PKG)
    with pytest.raises(RuntimeError), BatteryUnplugged(sampler, journal):
        assert [e.kind for e in journal.pending()] == [UNPLUG_KIND]
        reading = sampler.read_once()
        assert fake.battery_unplugged
        assert all("updates stopped" in s.note for s in reading if s.metric == "battery.level_pct")
        raise RuntimeError("the run crashed")
    assert not fake.battery_unplugged
    assert journal.pending() == []


def test_a_crash_left_unplugged_is_reset_at_the_next_start(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    path = tmp_path / "journal.jsonl"
    crashed = Journal(path)
    entry = crashed.record(UNPLUG_KIND, fake.serial)
    fake.run("dumpsys battery unplug")
    # as if written by a process that died: rewrite the pid to one that cannot exist
    path.write_text(path.read_text().replace(f'"pid": {entry.pid}', '"pid": 999999999'))
    assert Journal(path, UNDOERS).recover() == []
    assert not fake.battery_unplugged


def test_an_android_runs_sampling_reads_in_the_background(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from devicelab.samplers import active_log
    from devicelab.samplers.run import android_run_sampling

    sampling = android_run_sampling(device, PKG, tmp_path, datetime.now(UTC), period_s=0.1)
    try:
        assert active_log() is sampling.log
        deadline = time.monotonic() + 10
        while "cpu.app_pct" not in {s.name for s in sampling.series()}:
            assert time.monotonic() < deadline, sampling.log.read()
            time.sleep(0.1)
    finally:
        sampling.close()
    assert active_log() is None
    names = {s.name for s in sampling.series()}
    assert {"memory.pss_mb", "cpu.app_pct", "battery.level_pct", "battery.current_ma"} <= names
