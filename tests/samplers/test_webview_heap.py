"""The DevTools heap reading (devicelab.platforms.devtools) and WebViewHeap over a
recorded DevTools peer: Performance enabled once, a forced GC before every reading, the
app's PSS read only when the memory checks ask for it (and why not, when it cannot be),
the PSS reader held as a context manager. The real passthrough is tested end to end in
tests/platforms/test_appium_session.py and tests/run/test_run_android.py."""

from __future__ import annotations

from typing import Any

import pytest

from devicelab.errors import ProbeFailed
from devicelab.platforms.devtools import JsHeap
from devicelab.samplers.webview import WebViewHeap


class RecordedDevTools:
    def __init__(self, heaps: list[float | None]) -> None:
        self.heaps = iter(heaps)
        self.calls: list[str] = []

    def __call__(self, command: str) -> dict[str, Any]:
        self.calls.append(command)
        if command != "Performance.getMetrics":
            return {}
        used = next(self.heaps)
        metrics: list[dict[str, Any]] = [{"name": "JSHeapTotalSize", "value": 9_000_000}]
        if used is not None:
            metrics.append({"name": "JSHeapUsedSize", "value": used})
        return {"metrics": metrics}


class Pss:
    def __init__(self, values: list[float | Exception]) -> None:
        self.values = iter(values)
        self.reads = 0
        self.held = 0

    def __call__(self) -> float:
        self.reads += 1
        value = next(self.values)
        if isinstance(value, Exception):
            raise value
        return value

    def __enter__(self) -> Pss:
        self.held += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.held -= 1


def test_each_reading_collects_garbage_and_the_pss_is_read_only_when_asked() -> None:
    devtools = RecordedDevTools([4_200_000, 5_750_000])
    pss = Pss([140.5, ProbeFailed("no process found for app.messaging.test")])
    heap = WebViewHeap(devtools, pss=pss)
    with heap:
        assert pss.held == 1
        assert heap() == 4.2
        assert heap.side_readings() == {"pss": 140.5}
        assert heap() == 5.75
        assert pss.reads == 1  # memory_leak's readings cost no dumpsys
        assert heap.side_readings() == {"pss": None}
    assert pss.held == 0
    assert "no process found" in heap.side_notes["pss"]
    assert devtools.calls == [
        "Performance.enable", "HeapProfiler.collectGarbage", "Performance.getMetrics",
        "HeapProfiler.collectGarbage", "Performance.getMetrics",
    ]  # fmt: skip
    assert WebViewHeap(devtools).side_readings() == {}


def test_no_js_heap_in_the_metrics_is_a_probe_failure() -> None:
    with pytest.raises(ProbeFailed, match="no JSHeapUsedSize"):
        WebViewHeap(RecordedDevTools([None]))()
    heap = JsHeap(RecordedDevTools([3_000_000]), collect_garbage=False)
    assert heap.read() == {"used": 3_000_000.0, "total": 9_000_000.0}
