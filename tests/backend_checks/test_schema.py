"""The reference schema's behaviour: auth.uid() from the JWT claims, RLS, the functions."""

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


def _pick(conn: psycopg.Connection[Any]) -> tuple[str, str, str]:
    """A direct conversation, one of its two users, and a user outside it."""
    row = conn.execute(
        """SELECT c.id::text, c.participants[1]::text,
                  (SELECT p.id::text FROM profiles p WHERE NOT (p.id = ANY(c.participants))
                   ORDER BY p.id LIMIT 1)
           FROM conversations c JOIN messages m ON m.conversation_id = c.id
           WHERE c.type = 'direct' GROUP BY c.id ORDER BY count(*) DESC LIMIT 1"""
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_auth_uid_reads_the_claims(conn: psycopg.Connection[Any]) -> None:
    _as(conn, "00000000-0000-4000-8000-000000000001")
    row = conn.execute("SELECT auth.uid()::text, auth.role(), auth.jwt() ->> 'sub'").fetchone()
    assert row == (
        "00000000-0000-4000-8000-000000000001",
        "authenticated",
        "00000000-0000-4000-8000-000000000001",
    )


def test_rls_shows_only_the_callers_conversations(conn: psycopg.Connection[Any]) -> None:
    conversation, member, outsider = _pick(conn)
    mine = conn.execute(
        "SELECT count(*) FROM conversations WHERE %s::uuid = ANY(participants)", (member,)
    ).fetchone()
    _as(conn, member)
    assert conn.execute("SELECT count(*) FROM conversations").fetchone() == mine
    seen = conn.execute(
        "SELECT count(*) FROM messages WHERE conversation_id = %s", (conversation,)
    ).fetchone()
    assert seen and seen[0] > 0
    listed = conn.execute("SELECT count(*) FROM conversation_list").fetchone()
    assert listed == mine
    conn.execute("RESET ROLE")
    _as(conn, outsider)
    assert conn.execute(
        "SELECT count(*) FROM messages WHERE conversation_id = %s", (conversation,)
    ).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM search_messages('test')").fetchone() is not None


def test_send_message_and_mark_as_read(conn: psycopg.Connection[Any]) -> None:
    conversation, member, outsider = _pick(conn)
    _as(conn, member)
    sent = conn.execute(
        "SELECT (send_message(%s::uuid, 'Test message about pizza', 'text', NULL, NULL, NULL)).*",
        (conversation,),
    ).fetchone()
    assert sent is not None
    last = conn.execute(
        "SELECT last_message_id, unread_count FROM conversation_list WHERE id = %s", (conversation,)
    ).fetchone()
    assert last is not None and str(last[0]) == str(sent[0])
    found = conn.execute(
        "SELECT count(*) FROM search_messages('pizza', %s::uuid)", (conversation,)
    ).fetchone()
    assert found and found[0] >= 1
    # The other participant now has at least that message unread.
    other = conn.execute(
        "SELECT participants[2]::text FROM conversations WHERE id = %s", (conversation,)
    ).fetchone()
    assert other is not None
    conn.execute("RESET ROLE")
    _as(conn, other[0])
    before = conn.execute(
        "SELECT unread_count FROM conversation_list WHERE id = %s", (conversation,)
    ).fetchone()
    marked = conn.execute("SELECT mark_as_read(%s::uuid)", (conversation,)).fetchone()
    assert marked is not None and before is not None and marked[0] >= before[0] > 0
    after = conn.execute(
        "SELECT unread_count FROM conversation_list WHERE id = %s", (conversation,)
    ).fetchone()
    assert after == (0,)
    conn.execute("RESET ROLE")
    _as(conn, outsider)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            "SELECT send_message(%s::uuid, 'x', 'text', NULL, NULL, NULL)", (conversation,)
        )


def test_any_new_message_moves_its_conversation_up_never_an_older_one(
    conn: psycopg.Connection[Any],
) -> None:
    # The RLS insert policy lets a participant insert directly (supabase-js
    # `.from('messages').insert(...)`); the list's order must follow that too.
    conversation, member, _outsider = _pick(conn)

    def last_at() -> Any:
        row = conn.execute(
            "SELECT last_message_at FROM conversations WHERE id = %s", (conversation,)
        ).fetchone()
        return row[0] if row else None

    before = last_at()
    _as(conn, member)
    inserted = conn.execute(
        "INSERT INTO messages (conversation_id, sender_id, content, created_at)"
        " VALUES (%s, %s, 'hi', now() - interval '1 minute') RETURNING created_at",
        (conversation, member),
    ).fetchone()
    assert inserted is not None and last_at() == inserted[0] > before
    conn.execute(
        "INSERT INTO messages (conversation_id, sender_id, content, created_at)"
        " VALUES (%s, %s, 'an old one, imported', now() - interval '1 year')",
        (conversation, member),
    )
    assert last_at() == inserted[0]
    sent = conn.execute(
        "SELECT (send_message(%s::uuid, 'and one more', 'text', NULL, NULL, NULL)).created_at",
        (conversation,),
    ).fetchone()
    assert sent is not None and last_at() == sent[0] > inserted[0]


def test_mark_as_read_reads_the_unread_tail_even_where_generic_plans_are_preferred(
    conn: psycopg.Connection[Any],
) -> None:
    """From its sixth call in a session PL/pgSQL may switch to a generic plan, which takes
    a conversation for one of average size: at 100K messages it then read half of the
    biggest conversation to find the read point (38 ms instead of 0.2 ms), and a healthy
    database failed mark_as_read's < 50 ms about one check in three. At this test's scale
    the planner's own choice differs less, so the session asks for generic plans outright:
    the function must plan each call for its conversation anyway."""
    row = conn.execute(
        """SELECT m.conversation_id::text, c.participants[1]::text, count(*)
           FROM messages m JOIN conversations c ON c.id = m.conversation_id
           GROUP BY m.conversation_id, c.participants[1] ORDER BY count(*) DESC LIMIT 1"""
    ).fetchone()
    assert row is not None
    conversation, member, size = row
    assert size >= 200  # the skewed conversation: big enough for the plans to differ
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    for setting, value in (
        ("log_analyze", "on"),
        ("log_nested_statements", "on"),
        ("log_format", "json"),
        ("log_level", "notice"),
        ("log_min_duration", "0"),
    ):
        conn.execute(f"SET LOCAL auto_explain.{setting} = {value}")
    conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    _as(conn, member)
    conn.execute("SELECT mark_as_read(%s::uuid)", (conversation,))
    plans = [json.loads(n.split("plan:", 1)[1]) for n in notices if "plan:" in n]
    read_point = next(p for p in plans if "ORDER BY m.created_at DESC" in p["Query Text"])

    def messages_read(node: dict[str, Any]) -> int:
        own = node.get("Actual Rows", 0) if node.get("Relation Name") == "messages" else 0
        return int(own) + sum(messages_read(child) for child in node.get("Plans", []))

    assert messages_read(read_point["Plan"]) <= size // 10


def _unread_by_hand(conn: psycopg.Connection[Any], conversation: str, user: str) -> int:
    """The badge as the story means it, counted naively: of the conversation's newest 100
    live messages, those someone else sent that ``user`` has no receipt for."""
    row = conn.execute(
        """SELECT count(*) FROM (
               SELECT m.id, m.sender_id FROM messages m
               WHERE m.conversation_id = %(c)s AND m.deleted_at IS NULL
               ORDER BY m.created_at DESC LIMIT 100) recent
           WHERE recent.sender_id <> %(u)s
             AND recent.id NOT IN (SELECT r.message_id FROM message_read_receipts r
                                   WHERE r.user_id = %(u)s)""",
        {"c": conversation, "u": user},
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_unread_badge_counts_the_newest_100_live_messages_of_others_left_unread(
    conn: psycopg.Connection[Any],
) -> None:
    conversation, member, _outsider = _pick(conn)
    other_row = conn.execute(
        "SELECT participants[2]::text FROM conversations WHERE id = %s", (conversation,)
    ).fetchone()
    assert other_row is not None
    other = other_row[0]
    # 150 fresh messages from the other participant: more than the badge counts.
    conn.execute(
        """INSERT INTO messages (conversation_id, sender_id, content, created_at)
           SELECT %s, %s, 'fresh ' || i, now() + i * interval '1 second'
           FROM generate_series(1, 150) i""",
        (conversation, other),
    )

    def badge() -> int:
        _as(conn, member)
        row = conn.execute(
            "SELECT unread_count FROM conversation_list WHERE id = %s", (conversation,)
        ).fetchone()
        conn.execute("RESET ROLE")
        assert row is not None
        return int(row[0])

    assert badge() == 100 == _unread_by_hand(conn, conversation, member)
    # Read the newest 30, delete 5 of those, and send 10 of the member's own: each
    # changes which messages are among the newest 100, and how many of them count.
    conn.execute(
        """INSERT INTO message_read_receipts (message_id, user_id, read_at)
           SELECT id, %(u)s, now() FROM messages
           WHERE conversation_id = %(c)s ORDER BY created_at DESC LIMIT 30""",
        {"c": conversation, "u": member},
    )
    assert badge() == 70 == _unread_by_hand(conn, conversation, member)
    conn.execute(
        """UPDATE messages SET deleted_at = now() WHERE id IN (
               SELECT id FROM messages WHERE conversation_id = %s
               ORDER BY created_at DESC OFFSET 10 LIMIT 5)""",
        (conversation,),
    )
    conn.execute(
        """INSERT INTO messages (conversation_id, sender_id, content, created_at)
           SELECT %s, %s, 'mine ' || i, now() + (200 + i) * interval '1 second'
           FROM generate_series(1, 10) i""",
        (conversation, member),
    )
    # Newest 100 live: 10 own, 25 read, 65 unread of the other's.
    assert badge() == 65 == _unread_by_hand(conn, conversation, member)
    # The other side sees its own 150 as nothing unread, the member's 10 as unread.
    _as(conn, other)
    row = conn.execute(
        "SELECT unread_count FROM conversation_list WHERE id = %s", (conversation,)
    ).fetchone()
    conn.execute("RESET ROLE")
    assert row == (_unread_by_hand(conn, conversation, other),)
    assert row is not None and row[0] >= 10


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
