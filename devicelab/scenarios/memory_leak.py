"""memory_leak: the story's "Monitor for memory leaks over 5-minute test" / "No leaks over
5-minute test".

The app's normal workload repeats for ``duration_s`` (default 300 s, the story's 5
minutes): open the conversation list, open a conversation (its latest 50 messages loaded
into the app's state and rendered), search, then leave the conversation (the app drops
that screen's data, as navigating away does). Every ``sample_every_s`` the JS heap in use
is read after a forced garbage collection (CDP HeapProfiler.collectGarbage, then
Performance.getMetrics JSHeapUsedSize), between workload steps. Each reading goes to the
run's samples.jsonl at once, and the heap series into results.json.

On an iPhone the WKWebView's JS heap cannot be read while Appium holds the page's one
Web Inspector connection; the reading is the app's footprint instead (sysmontap
physFootprint of the app and its WebKit processes, devicelab.samplers.ios.AppFootprint),
and the forced collection is Appium's: the iPhone session runs with
``appium:safariGarbageCollect``, so Web Inspector's full GC (Heap.gc) precedes every script
call, and a script call (the harness's readiness check) precedes each reading.

The judged value is the heap's trend in MB per minute: the Theil-Sen slope (the median of
every pairwise slope), which one late GC or a mid-load reading barely moves; the least
squares slope is in the evidence for comparison. A warm-up cycle runs first and is not
sampled (first-use allocations: code, caches, connections).

The story gives no number: the target is the ``memory_leak`` row of targets.yaml when it
exists; until then devicelab's own bound (:data:`FALLBACK_TARGET`, 1 MB/min, i.e. 5 MB
over the 5 minutes) is used and the reason says so.

Shorter runs: ``DEVICELAB_LEAK_DURATION_S`` (e.g. 20 for a smoke run) or ``measure(ctx,
LeakOptions(duration_s=20))``.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from devicelab.models import Check, Target
from devicelab.samplers import (
    SAMPLES_FILE,
    Sample,
    SampleLog,
    active_log,
    least_squares_slope,
    theil_sen_slope,
)
from devicelab.scenarios.context import ScenarioContext, env_options, skipped
from devicelab.targets import judge, resolve

__all__ = ["CATEGORY", "CHECK_ID", "FALLBACK_TARGET", "TITLE", "LeakOptions", "measure", "run"]

CHECK_ID = "memory_leak"
TITLE = "Memory leak over a 5-minute session"
CATEGORY = "memory"
UNIT = "MB_per_min"
SERIES = "memory.js_heap_mb"
_HOW = "JSHeapUsedSize (CDP Performance.getMetrics) after HeapProfiler.collectGarbage"

#: Used only while targets.yaml has no memory_leak row (the story says "no leaks", no number).
FALLBACK_TARGET = Target(
    check=CHECK_ID,
    op="<",
    value=1.0,
    unit=UNIT,
    stat="value",
    source="devicelab's bound for story 8.1.7 'No leaks over 5-minute test' (the story sets "
    "no number; targets.yaml has no memory_leak row): JS heap trend < 1 MB/min",
)


class LeakOptions(BaseModel):
    """How long the leak run lasts and how often it reads the heap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float = Field(300.0, gt=0, description="workload time (the story: 5 minutes)")
    sample_every_s: float = Field(5.0, gt=0, description="seconds between heap readings")
    messages: int = Field(50, ge=1, description="messages a conversation opens with")

    @classmethod
    def from_env(cls) -> LeakOptions:
        """Options with ``DEVICELAB_LEAK_DURATION_S`` / ``DEVICELAB_LEAK_SAMPLE_S`` applied.
        Raises ConfigError for a value that is not a positive number."""
        variables = {
            "duration_s": "DEVICELAB_LEAK_DURATION_S",
            "sample_every_s": "DEVICELAB_LEAK_SAMPLE_S",
        }
        return env_options(cls, variables, "leak run")


def run(ctx: ScenarioContext) -> Check:
    """memory_leak with the options of the environment; returns the judged check."""
    return measure(ctx, LeakOptions.from_env())


def _cycle(ctx: ScenarioContext, options: LeakOptions) -> None:
    timeout = ctx.options.probe_timeout_s
    ctx.harness.run("conversation_list", {"count": 1, "limit": 50}, timeout_s=timeout)
    # User B is a member of the longest conversation (scenarios.fixture).
    ctx.harness.run("memory.messages", {"count": options.messages, "user": 2,
                                        "conversationId": ctx.big_conversation_id},
                    timeout_s=timeout)  # fmt: skip
    terms = ctx.search_terms[:1] or ["test query"]
    ctx.harness.run("message_search", {"count": 1, "terms": terms}, timeout_s=timeout)
    ctx.harness.run("memory.release", {}, timeout_s=timeout)


def measure(ctx: ScenarioContext, options: LeakOptions, log: SampleLog | None = None) -> Check:
    """Run the workload for ``options.duration_s``, reading the app's memory into ``log``
    (default the run's active log; outside a run a new one in a temporary folder). Returns
    the judged check (value: MB/min). Raises ProbeFailed when a probe or a reading fails.

    The reading is the context's ``heap_mb``: the JS heap on web and android; on an iPhone
    the app's footprint (``LEAK_SERIES`` / ``LEAK_HOW`` / ``SOURCE`` of the reader say what
    it is; one with ``VIA_SAMPLER`` reads through the run's sampler, which logs the readings
    and waits for the whole run; one with ``GC_BY_SCRIPT`` gets a script call right before
    each reading).
    """
    heap_mb = ctx.heap_mb
    if heap_mb is None:
        return skipped(CHECK_ID, TITLE, CATEGORY,
                       f"not built yet: the memory sampler of {ctx.platform} devices")  # fmt: skip
    if log is None:
        log = active_log() or SampleLog(Path(tempfile.mkdtemp(prefix="dl-leak-")) / SAMPLES_FILE)
    series = str(getattr(heap_mb, "LEAK_SERIES", SERIES))
    # A reader that reads through the run's sampler: the sampler logs the readings, and it
    # is held off for the whole run (its own background readings would interleave).
    via_sampler = bool(getattr(heap_mb, "VIA_SAMPLER", False))
    held: AbstractContextManager[object] = contextlib.nullcontext()
    if via_sampler and isinstance(heap_mb, AbstractContextManager):
        held = heap_mb
    ctx.say(f"memory_leak: repeating the workload for {options.duration_s:g} s")
    _cycle(ctx, options)  # warm-up, not sampled
    heap: list[Sample] = []

    # A reader whose garbage collection is Appium's (Heap.gc before each script call):
    # one script call right before each reading collects what the cycle left.
    collect_first = bool(getattr(heap_mb, "GC_BY_SCRIPT", False))

    def read() -> None:
        if collect_first:
            ctx.harness.wait_ready()
        sample = Sample(t=log.now(), metric=series, value=round(heap_mb(), 3), unit="MB",
                        source=str(getattr(heap_mb, "SOURCE", "cdp")))  # fmt: skip
        if not via_sampler:
            log.write([sample])
        heap.append(sample)

    cycles = 0
    with held:
        read()
        started = time.monotonic()
        due = started + options.sample_every_s
        while time.monotonic() - started < options.duration_s:
            _cycle(ctx, options)
            cycles += 1
            if time.monotonic() >= due:
                read()
                due = time.monotonic() + options.sample_every_s
        read()
    how = str(getattr(heap_mb, "LEAK_HOW", _HOW))
    return _judged(ctx, options, heap, cycles, log, series, how)


def _judged(
    ctx: ScenarioContext,
    options: LeakOptions,
    heap: list[Sample],
    cycles: int,
    log: SampleLog,
    series: str,
    how: str,
) -> Check:
    t = [s.t for s in heap if s.value is not None]
    v = [s.value for s in heap if s.value is not None]
    slope = round(theil_sen_slope(t, v) * 60, 4)
    row = resolve(ctx.book, CHECK_ID, ctx.platform, ctx.column)
    target = row if row is not None else FALLBACK_TARGET
    evidence = {
        "heap_first_mb": v[0],
        "heap_last_mb": v[-1],
        "heap_max_mb": max(v),
        "readings": len(v),
        "cycles": cycles,
        "duration_s": round(t[-1] - t[0], 1),
        "least_squares_mb_per_min": round(least_squares_slope(t, v) * 60, 4),
        "series": series,
        "samples_file": str(log.path),
        "workload": "per cycle: conversation list (50), open a conversation "
        f"({options.messages} messages kept and rendered), one search, leave it (released)",
        "how": f"{how}, every {options.sample_every_s:g} s between cycles; Theil-Sen slope",
    }
    check = judge(check=CHECK_ID, title=TITLE, category=CATEGORY, target=target, value=slope,
                  unit=UNIT, stat="value", column=ctx.column, evidence=evidence)  # fmt: skip
    if row is None and check.status in ("pass", "fail"):
        check.reason += "; no memory_leak row in targets.yaml: devicelab's bound was used"
    if options.duration_s < 300 and check.status in ("pass", "fail"):
        check.reason += f"; a shortened run ({options.duration_s:g} s, the story's is 300 s)"
    return check
