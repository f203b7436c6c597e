"""reconnect: the story's "Test Reconnection": the link drops for ``offline_s`` (the
story: 5 s); from the moment it is back, how long until B's chat channel is subscribed
again and a new message from A reaches B ("reconnect and sync").

The drop is real: the shaped proxy cuts every open connection (websocket included) and
refuses new ones, as a phone losing its network; the app's client notices by itself.
The proxy reopens the link on its own timer (``go_offline(seconds)``: no control call is
needed while it refuses connections). The moment "back online" is marked in the page
``_MARK_EARLY_S`` before that timer is due, so a sample can only over-count, by at most
that much.
"""

from __future__ import annotations

import time

from devicelab.harness import ProbeResult
from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, judged

__all__ = ["CATEGORY", "CHECK_ID", "TITLE", "run"]

CHECK_ID = "reconnect"
TITLE = "Reconnect after the link drops (resubscribed and a message through)"
CATEGORY = "realtime"
_MARK_EARLY_S = 0.02


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def run(ctx: ScenarioContext) -> Check:
    """Drop the link ``reconnect_cycles`` times; returns the judged check (max).
    Raises ProbeFailed when a cycle does not recover (the link is back online anyway)."""
    samples: list[float] = []
    cycles: list[dict[str, object]] = []
    timeout_ms = 30_000
    offline_s = ctx.options.offline_s
    for _ in range(ctx.options.reconnect_cycles):
        ctx.harness.run(
            "reconnect.prepare",
            {"conversationId": ctx.conversation_id, "timeoutMs": timeout_ms},
            timeout_s=ctx.options.probe_timeout_s,
        )
        went = time.monotonic()
        ctx.link.go_offline(offline_s)
        try:
            _sleep_until(went + offline_s - _MARK_EARLY_S)
            ctx.harness.run("reconnect.online", {})
        finally:
            _sleep_until(went + offline_s)  # the link is back on its own timer
        result = ctx.harness.run("reconnect.result", {}, timeout_s=timeout_ms / 1000 + 30)
        samples += result.samples
        cycles.append(result.evidence)
    evidence = {
        "offline_s": ctx.options.offline_s,
        "cycles": cycles,
        "how": "the shaped proxy cuts every connection and refuses new ones while offline",
        "online_mark": f"up to {_MARK_EARLY_S * 1000:g} ms before the link reopens (over-counts)",
        "client_reconnect_after_ms": ctx.harness.app.get("reconnect_after_ms"),
    }
    return judged(
        ctx, CHECK_ID, TITLE, CATEGORY, ProbeResult(samples=samples, unit="ms"), evidence=evidence
    )
