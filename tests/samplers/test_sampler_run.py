"""A web run's sampling (the lab's hook): the run's WebDevice in real Chromium, samples in
samples.jsonl as they come, their series in results.json through the record.

Its own module: Playwright's sync API allows one instance per thread, and the other
modules hold one in a module-scoped fixture.
"""

from __future__ import annotations

import time
from pathlib import Path


def test_a_web_runs_sampling_lands_in_samples_jsonl_and_results_series(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from devicelab import config
    from devicelab.models import RunInfo
    from devicelab.platforms.web import WebDevice
    from devicelab.records import RunRecord
    from devicelab.samplers import active_log, web_run_sampling
    from devicelab.scenarios import skipped

    started = datetime.now(UTC)
    web = WebDevice(config.device("web", config.load_inventory(None)), proxy_url=None).create()
    try:
        web.open("about:blank")
        sampling = web_run_sampling(web, tmp_path, started, period_s=0.2)
        assert active_log() is sampling.log
        record = RunRecord(RunInfo(id="r", kind="device", started_at=started,
                                   devicelab_version="0"), tmp_path)  # fmt: skip
        record.follow(sampling)
        # CPU is a difference of two readings: until the browser tree has been read twice
        # there is none (on a loaded machine 0.7 s of a 0.2 s period once held only one).
        samples, deadline = tmp_path / "samples.jsonl", time.monotonic() + 15
        while time.monotonic() < deadline:
            text = samples.read_text() if samples.exists() else ""
            if '"cpu.app_pct"' in text and '"cpu.renderer_pct"' in text:
                break
            time.sleep(0.1)
        record.add(skipped("memory_leak", "Memory leak", "memory", "a reason"))
        results = record.finish()
        sampling.close()
    finally:
        web.close()
    assert active_log() is None
    names = {s.name for s in results.series}
    assert {"cpu.app_pct", "cpu.renderer_pct", "memory.rss_mb"} <= names
    assert (tmp_path / "samples.jsonl").stat().st_size > 0
    assert all(t >= 0 for s in results.series for t in s.t)
