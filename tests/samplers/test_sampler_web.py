"""WebSampler against a real headless Chromium: the JS heap through CDP and the browser
tree's CPU and memory through psutil."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from devicelab.samplers import SampleLog
from devicelab.samplers.web import WebSampler, cdp_heap_reader, find_browser_pid

ALLOCATE = "(mb) => { window.kept = Array.from({length: mb}, () => new Array(131072).fill(1.5)); }"
SPIN = "(ms) => { const end = performance.now() + ms; let x = 0; while (performance.now() < end) x++; return x; }"  # noqa: E501


def test_heap_follows_what_the_page_keeps(chromium: Any, tmp_path: Path) -> None:
    read = cdp_heap_reader(chromium)
    before = read()
    chromium.evaluate(ALLOCATE, 20)  # 20 x 128K doubles: about 21 MB
    kept = read()
    chromium.evaluate("() => { window.kept = null; }")
    released = read()  # after a forced GC
    assert kept["memory.js_heap_mb"] - before["memory.js_heap_mb"] > 15
    assert released["memory.js_heap_mb"] < kept["memory.js_heap_mb"] - 15
    assert kept["memory.js_heap_total_mb"] >= kept["memory.js_heap_mb"]


def test_background_cpu_and_memory_with_heap_on_the_callers_thread(
    chromium: Any, tmp_path: Path
) -> None:
    log = SampleLog(tmp_path / "samples.jsonl")
    sampler = WebSampler(log, find_browser_pid(), heap=cdp_heap_reader(chromium))
    sampler.start(0.25)
    time.sleep(0.3)
    chromium.evaluate(SPIN, 1500)  # the renderer busy on one core for 1.5 s
    heap = sampler.read_heap()
    samples = sampler.stop()
    assert not [s.note for s in samples if s.value is None]  # no reading failed
    metrics = {s.metric for s in samples}
    assert {"cpu.app_pct", "cpu.renderer_pct", "cpu.total_pct", "memory.rss_mb"} <= metrics
    assert [s.metric for s in heap] == ["memory.js_heap_mb", "memory.js_heap_total_mb"]
    renderer = max(s.value or 0 for s in samples if s.metric == "cpu.renderer_pct")
    import psutil

    one_core = 100 / (psutil.cpu_count() or 1)
    assert renderer > 0.5 * one_core, samples  # a busy core shows
    assert log.read() == samples
