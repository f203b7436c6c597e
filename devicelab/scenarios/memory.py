"""The story's "Memory Usage": the RAM increase of loading 100 conversations and 1000
messages, as the app keeps them (state + rendered list).

The increase is read before and after the load, with the data still held:

- web: the page's JS heap in use (CDP Performance.getMetrics JSHeapUsedSize) after a
  forced garbage collection. DOM and renderer memory outside the JS heap is not counted.
- android: the same JS heap, of the app's WebView, through Appium's DevTools passthrough
  to chromedriver (devicelab.samplers.webview). The WebView renders in a process of its
  own (Android 8+, always on 11+), out of the app's PSS, so the app's TOTAL PSS
  (``dumpsys meminfo``) is read beside it into the evidence, and the background sampler
  is held off between the two reads (docs/device_run.md).
- ios: the app's footprint (sysmontap physFootprint of the app's process and the WebKit
  processes it is responsible for, where WKWebView keeps the page: the run's AppFootprint
  reader of devicelab.samplers.ios), each reading right after a script call that Appium
  precedes with Web Inspector's full garbage collection (``appium:safariGarbageCollect``,
  set on iPhone sessions). Where the instruments cannot be reached, or sysmontap stays
  silent while XCUITest runs, the check is an error that says why.

The reader is the context's ``heap_mb``; a reader that is also a context manager is held
around the two reads (AppPss, AppFootprint).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

from devicelab.harness import ProbeResult
from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, judged, skipped

__all__ = ["CATEGORY", "TITLES", "conversations", "messages"]

CATEGORY = "memory"
TITLES = {
    "memory_100_conversations": "Memory increase: 100 conversations loaded",
    "memory_1000_messages": "Memory increase: 1000 messages loaded",
}
_HEAP_HOW = ("JSHeapUsedSize (CDP Performance.getMetrics) after HeapProfiler.collectGarbage,"
             " before and after the load, with the data held by the app")  # fmt: skip


def _increase(
    ctx: ScenarioContext, check_id: str, probe: str, params: dict[str, object], wanted: int
) -> Check:
    read_mb: Callable[[], float] | None = ctx.heap_mb
    if read_mb is None:
        return skipped(check_id, TITLES[check_id], CATEGORY,
                       f"not built yet: the memory sampler of {ctx.platform} devices")  # fmt: skip
    name = str(getattr(read_mb, "NAME", "heap"))  # "heap" (web), "pss" (android), "footprint"
    held = read_mb if isinstance(read_mb, AbstractContextManager) else contextlib.nullcontext()
    ctx.harness.run("memory.release", {})
    # Readings taken beside the judged one (android: the app's PSS), into the evidence.
    side: Callable[[], dict[str, float | None]] = getattr(read_mb, "side_readings", dict)
    # iPhone: Appium collects the garbage before each script call (safariGarbageCollect),
    # so one script call right before each reading collects what came before it.
    collect = ctx.harness.wait_ready if getattr(read_mb, "GC_BY_SCRIPT", False) else None
    with held:
        if collect is not None:
            collect()
        before = read_mb()
        side_before = side()
        loaded = ctx.harness.run(probe, params, timeout_s=ctx.options.probe_timeout_s)
        if collect is not None:
            collect()
        after = read_mb()
        side_after = side()
    ctx.harness.run("memory.release", {})
    count = int(loaded.evidence.get("loaded") or 0)
    evidence = {
        f"{name}_before_mb": round(before, 3),
        f"{name}_after_mb": round(after, 3),
        "wanted": wanted,
        "how": str(getattr(read_mb, "HOW", _HEAP_HOW)),
    }
    for key in side_before.keys() | side_after.keys():
        evidence[f"{key}_before_mb"] = side_before.get(key)
        evidence[f"{key}_after_mb"] = side_after.get(key)
    notes = getattr(read_mb, "side_notes", {})
    if notes:
        evidence["side_notes"] = dict(notes)
    reason = ""
    if count < wanted:
        reason = f"only {count} of {wanted} could be loaded for user A: judged on what loaded"
    result = ProbeResult(samples=[], unit="MB", evidence=loaded.evidence)
    check = judged(ctx, check_id, TITLES[check_id], CATEGORY, result,
                   value=round(max(0.0, after - before), 3), evidence=evidence)  # fmt: skip
    if reason:
        check.reason = f"{check.reason}; {reason}"
    return check


def conversations(ctx: ScenarioContext) -> Check:
    """memory_100_conversations; returns the judged check (value, MB). Raises what the
    reader raises (ProbeFailed: no app process on the phone, or the app restarted)."""
    return _increase(ctx, "memory_100_conversations", "memory.conversations", {"count": 100}, 100)


def messages(ctx: ScenarioContext) -> Check:
    """memory_1000_messages; returns the judged check (value, MB). Raises as conversations."""
    # User B is a member of the longest conversation (see scenarios.fixture).
    params: dict[str, object] = {"count": 1000, "conversationId": ctx.big_conversation_id,
                                 "user": 2}  # fmt: skip
    return _increase(ctx, "memory_1000_messages", "memory.messages", params, 1000)
