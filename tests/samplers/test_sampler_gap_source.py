"""A failed reading (the phone gone) is a gap, and a gap is no source: the results.json
series keep the metric's name (docs/samplers.md), through the real adb server and the
fake phone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from devicelab.samplers import Sample, SampleLog, gap, to_series
from devicelab.samplers.android import AndroidSampler
from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import FakeAdbd

PKG = "com.example.app"


def test_gaps_of_another_source_do_not_rename_a_series() -> None:
    samples = [
        Sample(t=1, metric="memory.pss_mb", value=9.0, unit="MB", source="dumpsys meminfo"),
        gap(2, "memory.pss_mb", "adb", "reading failed: device offline"),
        Sample(t=3, metric="memory.pss_mb", value=9.5, unit="MB", source="dumpsys meminfo"),
        gap(4, "battery.level_pct", "pymobiledevice3", "reading failed: gone"),
    ]
    series = {s.name: s for s in to_series(samples)}
    assert set(series) == {"memory.pss_mb"}
    assert series["memory.pss_mb"].t == [1, 3]


def test_the_phone_gone_mid_run_keeps_the_series_names(
    adb_server: PrivateAdbServer, tmp_path: Path
) -> None:
    import adbutils

    log = SampleLog(tmp_path / "samples.jsonl")
    with adb_server.phone() as fake:
        device: Any = adbutils.AdbClient(port=adb_server.port).device(fake.serial)
        sampler = AndroidSampler(log, device, PKG)
        sampler.read_once()
        sampler.read_once()  # the CPU share needs two readings
    assert isinstance(fake, FakeAdbd)
    # Gone: each background reading now fails and is written as gaps of source "adb".
    sampler.start(period_s=0.1)
    deadline = time.monotonic() + 30
    while not any(s.value is None for s in log.read()) and time.monotonic() < deadline:
        time.sleep(0.1)
    sampler.stop()
    assert {s.source for s in log.read() if s.value is None} == {"adb"}
    names = {s.name for s in log.series()}
    assert {"memory.pss_mb", "battery.level_pct", "cpu.app_pct"} <= names, names
    assert not [n for n in names if "[" in n], names
