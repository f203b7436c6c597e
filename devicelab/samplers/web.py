"""The web device: the page's JS heap (CDP) and the browser's CPU and memory (psutil).

- CPU and memory come from the browser's process tree (the Chromium that Playwright
  launched: its main process and every child): ``cpu.app_pct`` is the whole tree,
  ``cpu.renderer_pct`` the renderer processes (``--type=renderer``), ``cpu.total_pct``
  the whole machine; all as shares of every core together. ``memory.rss_mb`` and
  ``memory.pss_mb`` are the renderers' (PSS splits shared pages fairly; RSS counts them
  in every process). These are read by the background thread.
- The JS heap (``memory.js_heap_mb``, JSHeapUsedSize after HeapProfiler.collectGarbage,
  and ``memory.js_heap_total_mb`` when the reader gives it) comes through a ``heap``
  callable. Playwright's sync API belongs to the thread that started it, so the heap is
  read only by :meth:`WebSampler.read_once` / :meth:`WebSampler.read_heap`, called on
  that thread (between workload steps), never by the background thread.

Tested with real Chromium (tests/samplers/test_sampler_web.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from devicelab.errors import DeviceUnreachable, ProbeFailed
from devicelab.samplers.base import Sampler
from devicelab.samplers.log import SampleLog
from devicelab.samplers.sample import METRICS, Sample

__all__ = ["HeapReader", "WebSampler", "cdp_heap_reader", "find_browser_pid"]

# DevTools stops answering, and the process is gone, when Chromium crashed or was killed.
_CDP_HINT = "the page or Chromium went away (a crash?): run again; `devicelab doctor` checks it"

HeapReader = Callable[[], Mapping[str, float]]


def find_browser_pid(parent: int | None = None) -> int:
    """The pid of the newest Chromium main process started under ``parent`` (default this
    process: Playwright's driver is our child, Chromium its child). Raises
    DeviceUnreachable when there is none."""
    import psutil

    found = []
    for proc in psutil.Process(parent).children(recursive=True):
        try:
            name = proc.name().lower()
            if "chrom" not in name:
                continue
            if any(arg.startswith("--type=") for arg in proc.cmdline()):
                continue
            found.append((proc.create_time(), proc.pid))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    if not found:
        raise DeviceUnreachable("no Chromium process runs under this devicelab",
                                hint="create the WebDevice first")  # fmt: skip
    return max(found)[1]


def cdp_heap_reader(page: Any, *, collect_garbage: bool = True) -> HeapReader:
    """A heap reader over a Playwright ``page``: JSHeapUsedSize and JSHeapTotalSize
    (CDP Performance.getMetrics), after HeapProfiler.collectGarbage unless told not to.
    The reader raises ProbeFailed when CDP does not answer; call it on Playwright's thread."""
    from devicelab.platforms.devtools import JsHeap

    session: list[Any] = []

    def send(command: str) -> dict[str, Any]:
        from playwright.sync_api import Error as PlaywrightError

        try:
            if not session:
                session.append(page.context.new_cdp_session(page))
            return dict(session[0].send(command))
        except PlaywrightError as exc:
            raise ProbeFailed(f"CDP {command} failed: {exc}", hint=_CDP_HINT) from exc

    heap = JsHeap(send, collect_garbage=collect_garbage)

    def read() -> dict[str, float]:
        names = {"used": "memory.js_heap_mb", "total": "memory.js_heap_total_mb"}
        return {names[key]: value / 1e6 for key, value in heap.read().items()}

    return read


class WebSampler(Sampler):
    """CPU and memory of the browser tree under ``browser_pid`` (background) and the JS
    heap through ``heap`` (on Playwright's thread only)."""

    SOURCE = "psutil"
    METRICS = ("cpu.app_pct", "memory.rss_mb")

    def __init__(self, log: SampleLog, browser_pid: int, heap: HeapReader | None = None) -> None:
        super().__init__(log)
        self.browser_pid = browser_pid
        self.heap = heap
        self._last: tuple[float, dict[int, float], float] | None = None

    def read_once(self) -> list[Sample]:
        """One reading of the browser tree and of the JS heap (call on Playwright's thread)."""
        return super().read_once() + self.read_heap()

    def read_heap(self) -> list[Sample]:
        """The JS heap now, written to the log; [] without a heap reader. Raises ProbeFailed."""
        if self.heap is None:
            return []
        t = self.log.now()
        samples = [Sample(t=t, metric=m, value=round(v, 3), unit=METRICS[m], source="cdp")
                   for m, v in self.heap().items()]  # fmt: skip
        with self._lock:
            self.log.write(samples)
            self.taken.extend(samples)
        return samples

    def _read(self, t: float) -> list[Sample]:
        import psutil

        try:
            root = psutil.Process(self.browser_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess as exc:
            raise DeviceUnreachable(
                f"the browser (pid {self.browser_pid}) is gone", hint=_CDP_HINT
            ) from exc
        cpu: dict[int, float] = {}
        renderers: list[Any] = []
        for proc in procs:
            try:
                times = proc.cpu_times()
                cpu[proc.pid] = times.user + times.system
                if "--type=renderer" in proc.cmdline():
                    renderers.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        host = psutil.cpu_times()
        now, machine = time.monotonic(), sum(host) - host.idle - getattr(host, "iowait", 0.0)
        samples = self._memory(t, renderers)
        last, self._last = self._last, (now, cpu, machine)
        if last is None:
            return samples  # percentages need two readings
        then, before, machine_before = last
        span = (now - then) * (psutil.cpu_count() or 1)
        if span <= 0:
            return samples

        def pct(pids: list[int]) -> float:
            # a process born since the last reading counts from zero
            used = sum(cpu[p] - before.get(p, 0.0) for p in pids if p in cpu)
            return round(max(0.0, 100 * used / span), 2)

        renderer_pids = [p.pid for p in renderers]
        total = round(min(100.0, 100 * (machine - machine_before) / span), 2)
        for metric, value in (("cpu.app_pct", pct(list(cpu))),
                              ("cpu.renderer_pct", pct(renderer_pids)),
                              ("cpu.total_pct", total)):  # fmt: skip
            samples.append(Sample(t=t, metric=metric, value=value, unit="%", source="psutil"))
        return samples

    @staticmethod
    def _memory(t: float, renderers: list[Any]) -> list[Sample]:
        import psutil

        rss = pss = 0.0
        for proc in renderers:
            try:
                full = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += full.rss
            pss += getattr(full, "pss", 0.0)
        if not renderers:
            return []
        out = [Sample(t=t, metric="memory.rss_mb", value=round(rss / 1e6, 3), unit="MB",
                      source="psutil")]  # fmt: skip
        if pss:
            out.append(Sample(t=t, metric="memory.pss_mb", value=round(pss / 1e6, 3), unit="MB",
                              source="psutil"))  # fmt: skip
        return out
