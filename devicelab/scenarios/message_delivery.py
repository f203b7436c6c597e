"""message_delivery: the story's "Realtime Subscription Latency": user A sends, user B's
client receives the row through realtime postgres_changes.

Both clients live in the app's page, so the send (HTTP) and the delivery (websocket)
both cross the shaped link, and both ends read one clock. A message that never arrives
fails the check whatever the latency of the others.
"""

from __future__ import annotations

from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, judged

__all__ = ["CATEGORY", "CHECK_ID", "TITLE", "run"]

CHECK_ID = "message_delivery"
TITLE = "Message delivery: A sends, B receives through realtime"
CATEGORY = "realtime"


def run(ctx: ScenarioContext) -> Check:
    """Send ``delivery_count`` messages from A to B; returns the judged check (p95).
    Raises ProbeFailed when the probe cannot run."""
    count = ctx.options.delivery_count
    result = ctx.harness.run(
        "message_delivery",
        {"conversationId": ctx.conversation_id, "count": count, "intervalMs": 250},
        timeout_s=ctx.options.probe_timeout_s,
    )
    check = judged(ctx, CHECK_ID, TITLE, CATEGORY, result)
    lost = int(result.evidence.get("lost") or 0)
    if lost:
        after = result.evidence.get("lost_after_ms")
        reason = f"{lost} of {count} messages never reached B (waited {after} ms each)"
        check = check.model_copy(update={"status": "fail", "reason": reason})
    return check
