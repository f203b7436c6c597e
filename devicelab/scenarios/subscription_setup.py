"""subscription_setup: opening a chat, from subscribe() to the "Subscribed to PostgreSQL"
system message: only from then on are changes delivered (phx_reply comes earlier and
would under-count). Each sample connects the websocket too, as opening the app does.
"""

from __future__ import annotations

from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, judged

__all__ = ["CATEGORY", "CHECK_ID", "TITLE", "run"]

CHECK_ID = "subscription_setup"
TITLE = "Realtime subscription setup (until Subscribed to PostgreSQL)"
CATEGORY = "realtime"


def run(ctx: ScenarioContext) -> Check:
    """Open ``subscription_count`` chat channels as B; returns the judged check (p95)."""
    result = ctx.harness.run(
        "subscription_setup",
        {"conversationId": ctx.conversation_id, "count": ctx.options.subscription_count},
        timeout_s=ctx.options.probe_timeout_s,
    )
    return judged(ctx, CHECK_ID, TITLE, CATEGORY, result)
