"""The local SQLite cache probes in the real built app, in real Chromium, against the
reference backend on a managed PostgreSQL of its own (the lab started as a run starts it,
``Lab.session``). The checks are N/A on the web device (the story's Web column), but the
app's cache is the same code a phone's WebView runs: jeep-sqlite on sql.js WASM here.

What the cache returns is compared with what the database holds for user A.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from devicelab.lab import LabSession
from devicelab.scenarios.local_cache import SYNC_MESSAGES
from tests.web_session import web_session

NO_SUCH_WORD = "zzqxnotaword"

# A's visible messages, newest first (the order the probe syncs in).
_A_MESSAGES = """SELECT m.id::text, m.conversation_id::text, m.content, m.created_at
FROM public.messages m JOIN public.conversations c ON c.id = m.conversation_id
WHERE c.participants @> ARRAY[%(a)s::uuid] AND m.deleted_at IS NULL
ORDER BY m.created_at DESC, m.id DESC"""


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSession]:
    """A started web lab (no shaping) with users A and B signed in inside the app; its
    cluster is stopped after."""
    with web_session("none", tmp_path_factory.mktemp("out"), "local-cache") as started:
        yield started


@pytest.fixture(scope="module")
def db() -> Iterator[psycopg.Connection[Any]]:
    """The run's database, as its owner (no RLS): what the backend holds."""
    from backend_checks.managed import ManagedPostgres

    with psycopg.connect(ManagedPostgres().ensure(), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def synced(session: LabSession) -> dict[str, Any]:
    """The evidence of one local_cache.prepare (the probe's own)."""
    return session.harness.run("local_cache.prepare", {"messages": SYNC_MESSAGES}).evidence


@pytest.mark.slow
def test_the_cache_holds_what_the_backend_holds_for_user_a(
    session: LabSession, db: psycopg.Connection[Any], synced: dict[str, Any]
) -> None:
    a = session.fixture.user_a_id
    row = db.execute("SELECT count(*) FROM public.conversations WHERE participants @> "
                     "ARRAY[%s::uuid]", (a,)).fetchone()  # fmt: skip
    assert row is not None and synced["conversations"] == row[0] > 50
    total = len(db.execute(_A_MESSAGES, {"a": a}).fetchall())
    assert synced["messages"] == min(total, SYNC_MESSAGES) > 50
    assert synced["engine"] == "@capacitor-community/sqlite web (jeep-sqlite, sql.js WASM)"
    # jeep-sqlite's sql.js is built without FTS5: the story's content index + LIKE.
    assert synced["search"] == "like" and "no such module: fts5" in synced["search_how"]
    assert synced["sqlite_version"].startswith("3.")
    assert synced["indexes"] == ["idx_local_conversations_last_message",
                                 "idx_local_messages_conversation_created",
                                 "idx_local_messages_search"]  # fmt: skip
    assert synced["sync_ms"] > 0 and synced["open_ms"] > 0


@pytest.mark.slow
def test_query_50_returns_the_50_newest_messages_of_the_fullest_conversation(
    session: LabSession, db: psycopg.Connection[Any], synced: dict[str, Any]
) -> None:
    result = session.harness.run("local_cache.query_50", {"count": 5, "returnRows": True})
    assert len(result.samples) == 5 and result.unit == "ms"
    evidence = result.evidence
    conversation = synced["fullest_conversation_id"]
    assert evidence["conversation_id"] == conversation
    assert evidence["rows"] == 50 and evidence["newest_first"] is True
    wanted = db.execute("SELECT id::text FROM public.messages WHERE conversation_id = %s AND "
                        "deleted_at IS NULL ORDER BY created_at DESC LIMIT 50",
                        (conversation,)).fetchall()  # fmt: skip
    assert [r["id"] for r in evidence["returned"]] == [w[0] for w in wanted]
    assert any("idx_local_messages_conversation_created" in p for p in evidence["plan"])


@pytest.mark.slow
def test_search_finds_a_cached_word_and_not_an_absent_one(
    session: LabSession, db: psycopg.Connection[Any], synced: dict[str, Any]
) -> None:
    word = session.fixture.search_terms[0]
    result = session.harness.run("local_cache.search", {"terms": [word, NO_SUCH_WORD], "count": 4})
    assert len(result.samples) == 4
    a = session.fixture.user_a_id
    cached = db.execute(_A_MESSAGES + " LIMIT %(n)s", {"a": a, "n": SYNC_MESSAGES}).fetchall()
    matching = sum(1 for r in cached if word.lower() in (r[2] or "").lower())
    assert matching > 0, f"{word!r} is in none of A's cached messages"
    assert result.evidence["hits"] == {word: min(50, matching), NO_SUCH_WORD: 0}


@pytest.mark.slow
def test_conversations_returns_50_by_last_message_with_their_newest_message(
    session: LabSession, db: psycopg.Connection[Any], synced: dict[str, Any]
) -> None:
    result = session.harness.run("local_cache.conversations", {"count": 5, "returnRows": True})
    evidence = result.evidence
    assert evidence["rows"] == 50 and evidence["ordered"] is True
    wanted = db.execute(
        """SELECT id::text, last_message_at FROM public.conversations
           WHERE participants @> ARRAY[%s::uuid]
           ORDER BY last_message_at DESC NULLS LAST LIMIT 50""",
        (session.fixture.user_a_id,),
    ).fetchall()
    returned = evidence["returned"]
    assert {r["id"] for r in returned} == {w[0] for w in wanted}
    # The last message shown is the conversation's newest in the cache.
    first = returned[0]
    newest = db.execute("SELECT id::text FROM public.messages WHERE conversation_id = %s "
                        "AND deleted_at IS NULL ORDER BY created_at DESC LIMIT 1",
                        (first["id"],)).fetchone()  # fmt: skip
    assert newest is not None and first["last_message_id"] == newest[0]
    assert any("idx_local_conversations_last_message" in p for p in evidence["plan"])


@pytest.mark.slow
def test_on_the_web_device_the_checks_stay_not_applicable(session: LabSession) -> None:
    check = session.measure("local_cache_search")
    assert check.status == "skip" and "N/A on web" in check.reason
