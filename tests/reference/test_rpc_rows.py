"""``/rpc`` functions that return rows of a table: embedding from them, and a count that
does not call the function twice (raw HTTP against PostgREST's answers)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from conftest import conversation_id, user_id

MINE = conversation_id("12")


def _sent(db: psycopg.Connection[Any], content: str) -> int:
    row = db.execute("SELECT count(*) FROM public.messages WHERE content = %s", (content,))
    return int(row.fetchone()[0])  # type: ignore[index]


def test_a_counted_call_runs_the_function_once(
    http: httpx.Client, h1: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """``Prefer: count=exact`` on a volatile function: one message sent, counted as one
    (PostgREST counts the rows of the one call)."""
    headers = {**h1, "Prefer": "count=exact"}
    resp = http.post("/rpc/send_message", json={"p_conversation_id": MINE, "p_content": "once"},
                     headers=headers)  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.json()["content"] == "once"
    assert _sent(db, "once") == 1


def test_a_set_returning_call_counts_every_row_and_pages_one_call(
    http: httpx.Client, h1: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A set-returning function that writes: the count is of its rows before the range,
    and the function ran once."""
    db.execute(
        "CREATE OR REPLACE FUNCTION public.rpc_rows_send_three(p_tag text)"
        " RETURNS SETOF public.messages LANGUAGE sql AS $$"
        f" SELECT public.send_message('{MINE}'::uuid, p_tag || n) FROM generate_series(1, 3) n $$"
    )
    db.execute("NOTIFY pgrst, 'reload schema'")
    headers = {**h1, "Prefer": "count=exact"}
    resp = http.post("/rpc/rpc_rows_send_three?limit=1", json={"p_tag": "three-"},
                     headers=headers)  # fmt: skip
    assert resp.status_code in (200, 206), resp.text
    assert len(resp.json()) == 1
    assert resp.headers["Content-Range"] == "0-0/3"
    assert sum(_sent(db, f"three-{n}") for n in (1, 2, 3)) == 3


def test_rows_of_a_table_embed_its_relationships(http: httpx.Client, h1: dict[str, str]) -> None:
    """send_message returns public.messages: its row embeds the sender's profile and the
    conversation, as ``supabase.rpc('send_message', ...).select('*, conversations(*)')``
    (profiles is two relationships away from messages: the sender's key and the receipts,
    so it is named by its key)."""
    resp = http.post(
        "/rpc/send_message",
        params={
            "select": "content,sender:profiles!messages_sender_id_fkey(username),"
            "conversations(type)"
        },
        json={"p_conversation_id": MINE, "p_content": "embedded"},
        headers=h1,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "content": "embedded",
        "sender": {"username": "testuser1"},
        "conversations": {"type": "direct"},
    }
    # A filter inside the embed binds its value in the select list, ahead of the call's
    # arguments in the statement's text.
    filtered = http.post(
        "/rpc/send_message",
        params={
            "select": "content,sender:profiles!messages_sender_id_fkey(username)",
            "sender.username": "eq.nobody",
        },
        json={"p_conversation_id": MINE, "p_content": "filtered"},
        headers=h1,
    )
    assert filtered.status_code == 200, filtered.text
    assert filtered.json() == {"content": "filtered", "sender": None}
    counted = http.post(
        "/rpc/send_message",
        params={
            "select": "content,sender:profiles!messages_sender_id_fkey(username)",
            "sender.username": "eq.testuser1",
        },
        json={"p_conversation_id": MINE, "p_content": "filtered and counted"},
        headers={**h1, "Prefer": "count=exact"},
    )
    assert counted.status_code == 200, counted.text
    assert counted.json() == {
        "content": "filtered and counted",
        "sender": {"username": "testuser1"},
    }


def test_an_embed_filter_on_the_rows_of_a_table_returning_set(
    http: httpx.Client, h1: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A set-returning function of messages, filtered through its embed (``!inner``), and
    the PGRST201 of an ambiguous embed, as from the table itself."""
    db.execute(
        "CREATE OR REPLACE FUNCTION public.rpc_rows_mine() RETURNS SETOF public.messages"
        " LANGUAGE sql STABLE AS $$ SELECT * FROM public.messages $$"
    )
    db.execute("GRANT EXECUTE ON FUNCTION public.rpc_rows_mine() TO authenticated")
    db.execute("NOTIFY pgrst, 'reload schema'")
    two = user_id(2)
    resp = http.get(
        "/rpc/rpc_rows_mine",
        params={
            "select": "sender_id,sender:profiles!messages_sender_id_fkey!inner(username)",
            "sender.id": f"eq.{two}",
            "limit": "2",
        },
        headers={**h1, "Prefer": "count=exact"},
    )
    assert resp.status_code in (200, 206), resp.text
    rows = resp.json()
    assert len(rows) == 2 and all(r == {"sender_id": two, "sender": {"username": "testuser2"}}
                                  for r in rows)  # fmt: skip
    # The count is of the rows the embed's filter keeps, before the range.
    visible = db.execute(
        "SELECT count(*) FROM public.messages m JOIN public.conversations c"
        " ON c.id = m.conversation_id WHERE m.sender_id = %s AND c.participants @> ARRAY[%s::uuid]",
        (two, user_id(1)),
    ).fetchone()
    assert visible and visible[0] > 2
    assert resp.headers["Content-Range"] == f"0-1/{visible[0]}"
    ambiguous = http.get("/rpc/rpc_rows_mine", params={"select": "profiles(username)"},
                         headers=h1)  # fmt: skip
    assert ambiguous.status_code == 300 and ambiguous.json()["code"] == "PGRST201"


def test_rows_of_no_table_have_no_relationships(http: httpx.Client, h1: dict[str, str]) -> None:
    """search_messages returns TABLE (...): nothing to embed, PostgREST's PGRST200."""
    resp = http.get(
        "/rpc/search_messages",
        params={"p_query": "pizza", "select": "content,profiles(username)"},
        headers=h1,
    )
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == "PGRST200"
    assert body["message"] == (
        "Could not find a relationship between 'search_messages' and 'profiles' in the schema cache"
    )


def test_rows_of_no_table_relate_to_nothing_even_beside_a_namesake_table(
    http: httpx.Client, h1: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A table named as the function, with a key to conversations, lends the function's
    rows no relationship."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS public.rpc_rows_plain (conversation_id uuid"
        " REFERENCES public.conversations (id))"
    )
    db.execute(
        "CREATE OR REPLACE FUNCTION public.rpc_rows_plain() RETURNS TABLE (conversation_id uuid)"
        f" LANGUAGE sql STABLE AS $$ SELECT '{MINE}'::uuid $$"
    )
    db.execute("NOTIFY pgrst, 'reload schema'")
    resp = http.get("/rpc/rpc_rows_plain", params={"select": "conversation_id,conversations(type)"},
                    headers=h1)  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "PGRST200"


def test_one_named_column_comes_back_as_objects(
    http: httpx.Client, h1: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """RETURNS TABLE (one column) and one OUT parameter answer objects keyed by the
    column's name, not bare values (PostgREST since 8.0.1)."""
    db.execute(
        "CREATE OR REPLACE FUNCTION public.rpc_rows_one_column() RETURNS TABLE (n integer)"
        " LANGUAGE sql STABLE AS $$ SELECT generate_series(1, 3) $$"
    )
    db.execute(
        "CREATE OR REPLACE FUNCTION public.rpc_rows_one_out(p integer, OUT plus_one integer)"
        " LANGUAGE sql STABLE AS $$ SELECT p + 1 $$"
    )
    db.execute("NOTIFY pgrst, 'reload schema'")
    table = http.get("/rpc/rpc_rows_one_column", params={"n": "gt.1", "order": "n.desc"},
                     headers=h1)  # fmt: skip
    assert table.status_code == 200, table.text
    assert table.json() == [{"n": 3}, {"n": 2}]
    out = http.post("/rpc/rpc_rows_one_out", json={"p": 5}, headers=h1)
    assert out.status_code == 200, out.text
    assert out.json() == {"plus_one": 6}
