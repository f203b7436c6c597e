"""The conversation list's unread badge: what one badge reads, and who may read it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest


@pytest.fixture
def conn(healthy_db: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose every change is rolled back (the shared database stays as is)."""
    with psycopg.connect(healthy_db) as connection, connection.transaction(force_rollback=True):
        yield connection


def _as(conn: psycopg.Connection[Any], user: str) -> None:
    claims = json.dumps({"sub": user, "role": "authenticated"})
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))
    conn.execute("SET LOCAL ROLE authenticated")


def _hits(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]) -> int:
    """Shared buffers the statement read (hit or read), by EXPLAIN ANALYZE."""
    row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def _busiest(conn: psycopg.Connection[Any]) -> tuple[str, int]:
    """The user in the most conversations, and how many."""
    row = conn.execute(
        """SELECT p.id::text, count(*) FROM conversations c, unnest(c.participants) p(id)
           GROUP BY p.id ORDER BY count(*) DESC, p.id LIMIT 1"""
    ).fetchone()
    assert row is not None
    return row[0], int(row[1])


def test_one_badge_reads_the_same_whatever_the_number_of_the_callers_chats(
    conn: psycopg.Connection[Any],
) -> None:
    # As SECURITY INVOKER, the messages policy scanned every conversation of the caller
    # again inside each badge, 50 times per list: a user in 111 conversations read 6,293
    # buffers for a list that needs 2,246.
    user, chats = _busiest(conn)
    assert chats >= 20  # enough chats that a per-badge scan of them shows
    scan = _hits(
        conn, "SELECT count(*) FROM conversations WHERE participants @> ARRAY[%s::uuid]", (user,)
    )
    row = conn.execute(
        """SELECT c.id::text FROM conversations c JOIN messages m ON m.conversation_id = c.id
           WHERE c.participants @> ARRAY[%s::uuid]
           GROUP BY c.id ORDER BY count(*) DESC, c.id LIMIT 1""",
        (user,),
    ).fetchone()
    assert row is not None
    conversation = row[0]
    # What the badge must read: the newest 100 messages by the index, and the caller's
    # receipts for them (counted here as the superuser, without any policy).
    needed = _hits(
        conn,
        """SELECT count(*) FROM (
               SELECT m.id FROM messages m WHERE m.conversation_id = %s::uuid
                 AND m.deleted_at IS NULL ORDER BY m.created_at DESC LIMIT 100) recent
           WHERE NOT EXISTS (SELECT 1 FROM message_read_receipts r
                             WHERE r.message_id = recent.id AND r.user_id = %s::uuid)""",
        (conversation, user),
    )
    _as(conn, user)
    # The first call also reads the catalogs to plan the function's body: the second
    # reads only what the badge needs.
    _hits(conn, "SELECT public.recent_unread_count(%s::uuid)", (conversation,))
    badge = _hits(conn, "SELECT public.recent_unread_count(%s::uuid)", (conversation,))
    conn.execute("RESET ROLE")
    assert badge < needed + scan, (badge, needed, scan)


def test_a_badge_of_someone_elses_conversation_is_zero(conn: psycopg.Connection[Any]) -> None:
    # SECURITY DEFINER reads past RLS: the function itself must keep to the caller's
    # conversations, or anyone could count another chat's messages.
    row = conn.execute(
        """SELECT c.id::text, c.participants[1]::text,
                  (SELECT p.id::text FROM profiles p WHERE NOT (p.id = ANY(c.participants))
                   ORDER BY p.id LIMIT 1)
           FROM conversations c JOIN messages m ON m.conversation_id = c.id
           GROUP BY c.id ORDER BY count(*) DESC LIMIT 1"""
    ).fetchone()
    assert row is not None
    conversation, member, outsider = row
    conn.execute(
        """INSERT INTO messages (conversation_id, sender_id, content, created_at)
           SELECT %s, %s, 'fresh ' || i, now() + i * interval '1 second'
           FROM generate_series(1, 5) i""",
        (conversation, member),
    )
    _as(conn, outsider)
    assert conn.execute(
        "SELECT public.recent_unread_count(%s::uuid)", (conversation,)
    ).fetchone() == (0,)
    conn.execute("RESET ROLE")
    conn.execute("SET LOCAL ROLE anon")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT public.recent_unread_count(%s::uuid)", (conversation,))
