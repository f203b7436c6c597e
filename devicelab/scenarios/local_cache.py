"""The story's "Local SQLite Queries" (section 5): the app's local cache, timed in the app.

The cache is prepared once per app session, by the first of the three checks that runs:
the probe ``local_cache.prepare`` syncs user A's conversations and A's newest
:data:`SYNC_MESSAGES` messages from the backend (supabase-js, under RLS) into the app's
SQLite (@capacitor-community/sqlite: native on a phone, jeep-sqlite + sql.js WASM in a
WebView stand-in) with the story's indexes, and full-text search through FTS5 where that
SQLite has it, else the story's content index + LIKE. Then:

- local_cache_query_50: the 50 newest messages of A's fullest cached conversation;
- local_cache_search: the run's search terms (words of the data set, 'test query');
- local_cache_conversations: 50 conversations with their last message, by last_message_at.

Every check carries the sync's evidence (rows, sync time, FTS5 or LIKE, SQLite version)
under ``cache``. The story marks these N/A on the web (Web (Desktop) column).
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from devicelab.harness import Harness, ProbeResult
from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, judged

__all__ = ["CATEGORY", "SYNC_MESSAGES", "TITLES", "conversations", "query_50", "search"]

CATEGORY = "cache"
TITLES = {
    "local_cache_query_50": "Local cache: 50 messages from SQLite",
    "local_cache_search": "Local cache: search messages in SQLite",
    "local_cache_conversations": "Local cache: conversation list (50) from SQLite",
}
#: How many of A's newest messages the cache holds: a few screens of every recent
#: conversation, as an app keeps (not A's whole history).
SYNC_MESSAGES = 5000
_SYNC_KEYS = (
    "engine", "sqlite_version", "search", "search_how", "conversations", "messages",
    "messages_limit", "fetch_ms", "open_ms", "write_ms", "sync_ms", "indexes",
)  # fmt: skip

# The sync of each app session (one harness each), so the three checks share one cache.
_synced: WeakKeyDictionary[Harness, ProbeResult] = WeakKeyDictionary()


def _cache(ctx: ScenarioContext) -> dict[str, Any]:
    """The sync's evidence, syncing first when this app session has no cache yet.
    Raises ProbeFailed when the sync fails (each check then reports it as its error)."""
    synced = _synced.get(ctx.harness)
    if synced is None:
        ctx.say(f"syncing user A's data into the app's local SQLite (up to {SYNC_MESSAGES} "
                "messages)")  # fmt: skip
        synced = ctx.harness.run("local_cache.prepare", {"messages": SYNC_MESSAGES},
                                 timeout_s=ctx.options.probe_timeout_s)  # fmt: skip
        _synced[ctx.harness] = synced
    return {key: synced.evidence.get(key) for key in _SYNC_KEYS}


def _run(ctx: ScenarioContext, check_id: str, probe: str, params: dict[str, Any]) -> Check:
    cache = _cache(ctx)
    params = {"count": ctx.options.query_count, **params}
    result = ctx.harness.run(probe, params, timeout_s=ctx.options.probe_timeout_s)
    return judged(ctx, check_id, TITLES[check_id], CATEGORY, result, evidence={"cache": cache})


def _note(check: Check, note: str) -> Check:
    check.reason = f"{check.reason}; {note}" if check.reason else note
    return check


def query_50(ctx: ScenarioContext) -> Check:
    """local_cache_query_50; returns the judged check (p95, ms). Raises ProbeFailed when
    the sync or the probe fails."""
    check = _run(ctx, "local_cache_query_50", "local_cache.query_50", {"limit": 50})
    rows = int(check.evidence.get("rows") or 0)
    if rows < 50:
        _note(check, f"A's fullest cached conversation has {rows} messages: judged on those")
    return check


def search(ctx: ScenarioContext) -> Check:
    """local_cache_search; returns the judged check (p95, ms). Raises as query_50."""
    check = _run(ctx, "local_cache_search", "local_cache.search",
                 {"terms": ctx.search_terms, "limit": 50})  # fmt: skip
    if not any(int(n) for n in dict(check.evidence.get("hits") or {}).values()):
        _note(check, "no term matched a cached message: timed on empty results")
    return check


def conversations(ctx: ScenarioContext) -> Check:
    """local_cache_conversations; returns the judged check (p95, ms). Raises as query_50."""
    check = _run(ctx, "local_cache_conversations", "local_cache.conversations", {"limit": 50})
    rows = int(check.evidence.get("rows") or 0)
    if rows < 50:
        _note(check, f"A has {rows} conversations in the cache: judged on those")
    return check
