"""``recommendations`` gives typed IndexRecommendation models (STYLE.md habit 6), not dicts
that callers read by key: the fields the reports print, masked, once per DDL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from devicelab.models import IndexRecommendation, Results
from devicelab.report._common import recommendations


def _backend_run(raw: dict[str, Any]) -> Results:
    raw["run"].update(kind="backend", device=None, network=None)
    proven = {
        "ddl": "CREATE INDEX ON public.messages (conversation_id, created_at DESC)",
        "proven": True,
        "proof": "HypoPG on message_fetch: planner cost 975 -> 345",
        "queries": ["message_fetch", 7],
        "table": "public.messages",
        "cost_before": 975.0,
    }
    unproven = {
        "ddl": "CREATE INDEX ON public.conversations USING gin (participants)",
        "proof": "unproven: the scratch copy failed (password=hunter2)",
        "queries": "not a list",
    }
    raw["checks"][0]["status"], raw["checks"][1]["status"] = "fail", "pass"
    raw["checks"][0]["evidence"] = {"suggestions": [unproven, proven, {"ddl": 3}, "x"]}
    raw["checks"][1]["evidence"] = {"suggestions": [proven]}
    return Results.model_validate(raw)


def test_recommendations_are_models_with_the_printed_fields(raw: dict[str, Any]) -> None:
    results = _backend_run(raw)
    first_id = results.checks[0].id
    found = recommendations(results)
    assert all(isinstance(item, IndexRecommendation) for item in found)
    best, other = found
    assert best.proven and not other.proven  # proven first
    assert best.ddl.endswith("(conversation_id, created_at DESC)")
    assert best.why == "HypoPG on message_fetch: planner cost 975 -> 345"
    assert best.queries == ["message_fetch", "7"]  # as text, whatever the evidence held
    assert best.checks == [first_id]  # the passing check did not report it
    assert other.why.startswith("the scratch copy failed") and "hunter2" not in other.why
    assert (other.queries, other.checks) == ([], [first_id])
    # Only what the reports print: the suggestion's other fields stay in the evidence.
    assert list(best.model_dump()) == ["ddl", "proven", "why", "queries", "checks"]


def test_a_recommendation_is_frozen_and_refuses_unknown_fields() -> None:
    item = IndexRecommendation(ddl="CREATE INDEX x")
    assert (item.proven, item.why, item.queries, item.checks) == (False, "", [], [])
    with pytest.raises(ValidationError):
        item.ddl = "CREATE INDEX y"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        IndexRecommendation(ddl="CREATE INDEX x", table="public.messages")  # type: ignore[call-arg]
