"""The story's "Memory Usage": the RAM increase of loading 100 conversations and 1000
messages, as the app keeps them (state + rendered list).

On the web device the increase is the page's JS heap in use (CDP Performance.getMetrics
JSHeapUsedSize) after a forced garbage collection, before and after the load, with the
data still held. DOM and renderer memory outside the JS heap is not counted. Phones need
their own sampler (dumpsys meminfo / sysmontap), not built yet.
"""

from __future__ import annotations

from collections.abc import Callable

from devicelab.harness import ProbeResult
from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, judged, skipped

__all__ = ["CATEGORY", "TITLES", "conversations", "messages"]

CATEGORY = "memory"
TITLES = {
    "memory_100_conversations": "Memory increase: 100 conversations loaded",
    "memory_1000_messages": "Memory increase: 1000 messages loaded",
}


def _increase(
    ctx: ScenarioContext, check_id: str, probe: str, params: dict[str, object], wanted: int
) -> Check:
    heap_mb: Callable[[], float] | None = ctx.heap_mb
    if heap_mb is None:
        return skipped(check_id, TITLES[check_id], CATEGORY,
                       f"not built yet: the memory sampler of {ctx.platform} devices")  # fmt: skip
    ctx.harness.run("memory.release", {})
    before = heap_mb()
    loaded = ctx.harness.run(probe, params, timeout_s=ctx.options.probe_timeout_s)
    after = heap_mb()
    ctx.harness.run("memory.release", {})
    count = int(loaded.evidence.get("loaded") or 0)
    evidence = {
        "heap_before_mb": round(before, 3),
        "heap_after_mb": round(after, 3),
        "wanted": wanted,
        "how": "JSHeapUsedSize (CDP Performance.getMetrics) after HeapProfiler.collectGarbage,"
        " before and after the load, with the data held by the app",
    }
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
    """memory_100_conversations; returns the judged check (value, MB)."""
    return _increase(ctx, "memory_100_conversations", "memory.conversations", {"count": 100}, 100)


def messages(ctx: ScenarioContext) -> Check:
    """memory_1000_messages; returns the judged check (value, MB)."""
    # User B is a member of the longest conversation (see scenarios.fixture).
    params: dict[str, object] = {"count": 1000, "conversationId": ctx.big_conversation_id,
                                 "user": 2}  # fmt: skip
    return _increase(ctx, "memory_1000_messages", "memory.messages", params, 1000)
