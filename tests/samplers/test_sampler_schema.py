"""The one schema: samples, their durable log, series for results.json, the robust
slope, the sampler thread contract and the record that follows the samples."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devicelab.models import RunInfo
from devicelab.records import RunRecord
from devicelab.samplers import (
    Sample,
    SampleLog,
    Sampler,
    gap,
    least_squares_slope,
    theil_sen_slope,
    to_series,
)
from devicelab.samplers.run import RunSampling
from devicelab.scenarios import skipped


def _s(t: float, v: float | None, metric: str = "memory.pss_mb", source: str = "x") -> Sample:
    return Sample(t=t, metric=metric, value=v, unit="MB", source=source)


def test_series_leave_gaps_out_and_name_sources_only_when_they_differ() -> None:
    samples = [
        _s(2, 11.0),
        _s(1, 10.0),
        gap(3, "memory.pss_mb", "x", "no process found"),
        _s(1, 5.0, "memory.js_heap_mb", "cdp"),
        _s(1, 6.0, "memory.js_heap_mb", "other"),
    ]
    series = {s.name: s for s in to_series(samples)}
    assert series["memory.pss_mb"].t == [1, 2] and series["memory.pss_mb"].v == [10.0, 11.0]
    assert set(series) == {"memory.pss_mb", "memory.js_heap_mb[cdp]", "memory.js_heap_mb[other]"}
    assert not to_series([gap(1, "cpu.app_pct", "adb", "not running")])


def test_the_log_is_on_disk_at_once_and_survives_a_torn_line(tmp_path: Path) -> None:
    log = SampleLog(tmp_path / "out" / "samples.jsonl", t0=0.0)
    log.write([_s(1, 1.0), gap(2, "memory.pss_mb", "x", "why")])
    lines = (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
    assert json.loads(lines[1])["note"] == "why" and json.loads(lines[1])["value"] is None
    with log.path.open("a") as handle:
        handle.write('{"t": 3, "metric": "mem')  # a crash mid-line
    assert [s.t for s in log.read()] == [1, 2]


def test_theil_sen_ignores_an_outlier_that_moves_least_squares() -> None:
    t = [float(i) for i in range(10)]
    v = [100 + 0.5 * x for x in t]
    v[5] += 40  # one reading taken mid-load
    assert theil_sen_slope(t, v) == pytest.approx(0.5)
    assert abs(least_squares_slope(t, v) - 0.5) > 0.1
    with pytest.raises(ValueError):
        theil_sen_slope([1.0, 1.0], [2.0, 3.0])


class _Counting(Sampler):
    SOURCE = "counting"
    METRICS = ("cpu.app_pct",)

    def __init__(self, log: SampleLog, fail_at: int) -> None:
        super().__init__(log)
        self.calls = 0
        self.fail_at = fail_at
        self.thread_names: set[str] = set()

    def _read(self, t: float) -> list[Sample]:
        self.calls += 1
        self.thread_names.add(threading.current_thread().name)
        if self.calls == self.fail_at:
            raise RuntimeError("device dropped")
        return [Sample(t=t, metric="cpu.app_pct", value=float(self.calls), unit="%", source="c")]


def test_a_sampler_reads_in_the_background_and_a_failed_reading_is_a_gap(tmp_path: Path) -> None:
    log = SampleLog(tmp_path / "samples.jsonl")
    sampler = _Counting(log, fail_at=2).start(0.02)
    deadline = threading.Event()
    while len(sampler.taken) < 4 and not deadline.wait(0.02):
        pass
    taken = sampler.stop()
    assert sampler.thread_names == {"devicelab-counting"}
    assert [s.note for s in taken if s.value is None] == ["reading failed: device dropped"]
    assert log.read() == taken  # every sample is in the file, not only in memory
    count = len(sampler.stop())  # idempotent
    assert count == len(taken)


def test_a_record_that_follows_the_samples_writes_their_series(tmp_path: Path) -> None:
    run = RunInfo(id="r1", kind="device", started_at=datetime.now(UTC), devicelab_version="0")
    record = RunRecord(run, tmp_path)
    log = SampleLog(tmp_path / "samples.jsonl", t0=0.0)
    sampler = _Counting(log, fail_at=0)
    record.follow(RunSampling(log, [sampler]))
    sampler.read_once()
    sampler.read_once()
    record.add(skipped("memory_leak", "Memory leak", "memory", "a reason"))
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["series"][0]["name"] == "cpu.app_pct"
    assert written["series"][0]["v"] == [1.0, 2.0]
