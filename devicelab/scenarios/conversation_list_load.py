"""conversation_list_load: the app's conversation list (the 50 most recent, with the last
message and the unread count) as user A, timed in the app from the call to the rows."""

from __future__ import annotations

from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, judged

__all__ = ["CATEGORY", "CHECK_ID", "TITLE", "run"]

CHECK_ID = "conversation_list_load"
TITLE = "Conversation list load (50 items) in the app"
CATEGORY = "query"


def run(ctx: ScenarioContext) -> Check:
    """Load the list ``query_count`` times; returns the judged check (p95)."""
    result = ctx.harness.run(
        "conversation_list",
        {"count": ctx.options.query_count, "limit": 50},
        timeout_s=ctx.options.probe_timeout_s,
    )
    return judged(ctx, CHECK_ID, TITLE, CATEGORY, result)
