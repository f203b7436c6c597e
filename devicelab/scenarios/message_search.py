"""message_search: full-text search of A's messages from the app (rpc search_messages),
with a few terms that exist in the data set and the story's own 'test query'."""

from __future__ import annotations

from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, judged

__all__ = ["CATEGORY", "CHECK_ID", "TITLE", "run"]

CHECK_ID = "message_search"
TITLE = "Message search in the app"
CATEGORY = "query"


def run(ctx: ScenarioContext) -> Check:
    """Search ``query_count`` times over the terms; returns the judged check (p95)."""
    result = ctx.harness.run(
        "message_search",
        {"count": ctx.options.query_count, "terms": ctx.search_terms},
        timeout_s=ctx.options.probe_timeout_s,
    )
    return judged(ctx, CHECK_ID, TITLE, CATEGORY, result)
