"""Filters, order and range on embedded resources, ``!inner``, null filters on embeds,
spreads, related orders and JSON paths, against PostgREST 12's semantics (Plan.hs:
``updateNode``, ``addNullEmbedFilters``, ``validateSpreadEmbeds``, ``addRelatedOrders``;
QueryBuilder.hs: the LATERAL joins and the count query's EXISTS)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from conftest import conversation_id, user_id

MINE = conversation_id("12")
C13 = conversation_id("13")
C23 = conversation_id("23")
C34 = conversation_id("34")


@pytest.fixture
def photo(db: psycopg.Connection[Any]) -> Iterator[str]:
    """A message of conversation 13 with JSON metadata, dated a day back (so it moves no
    conversation), deleted afterwards."""
    row = db.execute(
        "INSERT INTO messages (conversation_id, sender_id, content, metadata, created_at)"
        " VALUES (%s, %s, 'json: a photo',"
        ' \'{"kind": "photo", "size": {"w": 640}, "tags": ["sea", "sun"]}\','
        " now() - interval '1 day') RETURNING id",
        (C13, user_id(3)),
    ).fetchone()
    assert row is not None
    yield str(row[0])
    db.execute("DELETE FROM messages WHERE id = %s", (row[0],))


def _get(http: httpx.Client, path: str, headers: dict[str, str], **params: str) -> Any:
    resp = http.get(path, params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _senders(db: psycopg.Connection[Any], conversation: str) -> dict[str, str]:
    """Message id -> sender username, from the database itself."""
    rows = db.execute(
        "SELECT m.id::text, p.username FROM messages m JOIN profiles p ON p.id = m.sender_id"
        " WHERE m.conversation_id = %s",
        (conversation,),
    ).fetchall()
    return {str(i): str(u) for i, u in rows}


# ------------------------------------------------------------------ filters on embeds
def test_a_filter_on_an_embed_filters_the_embedded_rows_not_the_parents(
    http: httpx.Client, service: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    senders = _senders(db, C13)
    for path in ("sender", "profiles"):  # the alias or the relation name
        rows = _get(
            http,
            "/messages",
            service,
            select="id,sender:profiles!sender_id(username)",
            conversation_id=f"eq.{C13}",
            **{f"{path}.username": "eq.testuser1"},
        )
        assert {r["id"] for r in rows} == set(senders), path
        for row in rows:
            expected = {"username": "testuser1"} if senders[row["id"]] == "testuser1" else None
            assert row["sender"] == expected, path
    # `or` on an embed, and a to-many embed's rows filtered per parent.
    rows = _get(
        http,
        "/conversations",
        service,
        select="id,messages(sender_id)",
        id=f"in.({C13},{C23})",
        **{"messages.or": f"(sender_id.eq.{user_id(3)})"},
    )
    by_id = {r["id"]: r["messages"] for r in rows}
    assert len(by_id) == 2 and all(by_id.values())
    assert all(m["sender_id"] == user_id(3) for ms in by_id.values() for m in ms)


def test_nested_embed_paths_and_a_logic_tree_on_an_embed(
    http: httpx.Client, service: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    senders = _senders(db, C13)
    [conv] = _get(
        http,
        "/conversations",
        service,
        select="id,messages(id,profiles!sender_id(username))",
        id=f"eq.{C13}",
        **{"messages.profiles.username": "eq.testuser3"},
    )
    assert {m["id"] for m in conv["messages"]} == set(senders)
    for message in conv["messages"]:
        user = senders[message["id"]]
        assert message["profiles"] == ({"username": user} if user == "testuser3" else None)
    [conv] = _get(
        http,
        "/conversations",
        service,
        select="id,messages(id,profiles!sender_id(username))",
        id=f"eq.{C13}",
        **{"messages.profiles.or": "(username.eq.testuser1,username.eq.nobody)"},
    )
    assert {m["profiles"]["username"] for m in conv["messages"] if m["profiles"]} == {"testuser1"}


# ------------------------------------------------------------------ order and range on embeds
def test_the_last_message_of_each_conversation(
    http: httpx.Client, h1: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """``messages.order=created_at.desc&messages.limit=1``: a limit per conversation."""

    def newest(conversation: str, skip: int = 0) -> str:
        row = db.execute(
            "SELECT id::text FROM messages WHERE conversation_id = %s"
            " ORDER BY created_at DESC LIMIT 1 OFFSET %s",
            (conversation, skip),
        ).fetchone()
        assert row is not None
        return str(row[0])

    rows = _get(
        http,
        "/conversations",
        h1,
        select="id,messages(id,created_at)",
        order="id",
        **{"messages.order": "created_at.desc", "messages.limit": "1"},
    )
    # RLS holds inside the embed: testuser1 sees conversations 12 and 13 only.
    assert [r["id"] for r in rows] == [MINE, C13]
    assert [[m["id"] for m in r["messages"]] for r in rows] == [[newest(MINE)], [newest(C13)]]
    rows = _get(
        http,
        "/conversations",
        h1,
        select="id,messages(id)",
        order="id",
        **{"messages.order": "created_at.desc", "messages.limit": "1", "messages.offset": "1"},
    )
    assert [r["messages"] for r in rows] == [[{"id": newest(MINE, 1)}], [{"id": newest(C13, 1)}]]
    # Ascending, nulls and several terms parse as at the top level.
    [conv] = _get(
        http,
        "/conversations",
        h1,
        select="id,messages(content)",
        id=f"eq.{C13}",
        **{"messages.order": "created_at.asc.nullslast,id", "messages.limit": "2"},
    )
    assert len(conv["messages"]) == 2


# ------------------------------------------------------------------ !inner and null filters
def test_inner_embeds_filter_the_parents(
    http: httpx.Client, service: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    senders = {**_senders(db, C13), **_senders(db, C23)}
    by_3 = {i for i, u in senders.items() if u == "testuser3"}
    for select in (
        "id,sender:profiles!sender_id!inner(username)",
        "id,sender:profiles!inner!sender_id(username)",
    ):
        resp = http.get(
            "/messages",
            params={
                "select": select,
                "sender.username": "eq.testuser3",
                "conversation_id": f"in.({C13},{C23})",
            },
            headers={**service, "Prefer": "count=exact"},
        )
        assert resp.status_code == 200, resp.text
        assert {r["id"] for r in resp.json()} == by_3
        assert all(r["sender"] == {"username": "testuser3"} for r in resp.json())
        assert resp.headers["Content-Range"] == f"0-{len(by_3) - 1}/{len(by_3)}"
    # A to-many inner embed keeps the parents with a matching row; `rel()` filters only.
    rows = _get(
        http,
        "/conversations",
        service,
        select="id,messages!inner()",
        order="id",
        **{"messages.content": "like.*pizza*"},
    )
    assert rows == [{"id": MINE}]


def test_null_filters_on_embeds(http: httpx.Client, service: dict[str, str]) -> None:
    params = {"select": "id,messages(id)", "messages.content": "like.*pizza*", "order": "id"}
    without = _get(http, "/conversations", service, **params, messages="is.null")
    assert [r["id"] for r in without] == sorted([C13, C23, C34])
    assert all(r["messages"] == [] for r in without)
    with_ = _get(http, "/conversations", service, **params, messages="not.is.null")
    assert [r["id"] for r in with_] == [MINE]
    either = _get(
        http, "/conversations", service, **params, **{"or": f"(messages.not.is.null,id.eq.{C34})"}
    )
    assert [r["id"] for r in either] == [MINE, C34]
    # A to-one embed: the alias names it; null when its filter leaves no row.
    rows = _get(
        http,
        "/messages",
        service,
        select="id,sender:profiles!sender_id(username)",
        conversation_id=f"eq.{C23}",
        sender="is.null",
        **{"sender.username": "eq.testuser3"},
    )
    assert rows and all(r["sender"] is None for r in rows)


def test_inner_embeds_keep_rls(http: httpx.Client, h1: dict[str, str]) -> None:
    """testuser1 may read every profile but no message of conversation 34."""
    params = {
        "select": "username,messages!sender_id!inner(id)",
        "messages.conversation_id": f"eq.{C34}",
    }
    assert _get(http, "/profiles", h1, **params) == []


# ------------------------------------------------------------------ spreads
def test_spread_of_a_to_one_embed(http: httpx.Client, service: dict[str, str]) -> None:
    rows = _get(
        http,
        "/messages",
        service,
        conversation_id=f"eq.{C13}",
        order="created_at",
        select="id,...profiles!sender_id(username,name:full_name)",
    )
    assert rows and all(set(r) == {"id", "username", "name"} for r in rows)
    assert all(r["name"] == f"Test {r['username']}@example.com" for r in rows)
    # A filter on the spread embed leaves its columns null.
    rows = _get(
        http,
        "/messages",
        service,
        conversation_id=f"eq.{C13}",
        select="id,...profiles!sender_id(username)",
        **{"profiles.username": "eq.testuser1"},
    )
    assert {r["username"] for r in rows} == {"testuser1", None}


def test_spread_of_a_to_many_embed_is_refused(http: httpx.Client, h1: dict[str, str]) -> None:
    resp = http.get("/conversations", params={"select": "id,...messages(id)"}, headers=h1)
    assert resp.status_code == 400
    assert resp.json() == {
        "code": "PGRST119",
        "details": "'conversations' and 'messages' do not form a many-to-one or one-to-one"
        " relationship",
        "hint": None,
        "message": "A spread operation on 'messages' is not possible",
    }


# ------------------------------------------------------------------ related order
def test_order_by_a_to_one_embed(http: httpx.Client, service: dict[str, str]) -> None:
    rows = _get(
        http,
        "/messages",
        service,
        conversation_id=f"in.({C13},{C23})",
        select="id,sender:profiles!sender_id(username)",
        order="sender(username).desc,id",
    )
    names = [r["sender"]["username"] for r in rows]
    assert names == sorted(names, reverse=True) and len(set(names)) == 3
    resp = http.get(
        "/conversations",
        params={"select": "id,messages(id)", "order": "messages(id)"},
        headers=service,
    )
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST118"
    assert resp.json()["message"] == "A related order on 'messages' is not possible"


# ------------------------------------------------------------------ JSON paths
def test_json_paths_in_select_filter_and_order(
    http: httpx.Client, service: dict[str, str], photo: str
) -> None:
    [row] = _get(
        http,
        "/messages",
        service,
        id=f"eq.{photo}",
        select="metadata->>kind,metadata->size->w,label:metadata->tags->>1",
    )
    assert row == {"kind": "photo", "w": 640, "label": "sun"}
    # An index takes the last key before it as its name, else the column's.
    [row] = _get(http, "/messages", service, id=f"eq.{photo}", select="metadata->tags->0")
    assert row == {"tags": "sea"}
    [row] = _get(http, "/messages", service, id=f"eq.{photo}", select="id,metadata->size::text")
    assert row == {"id": photo, "size": '{"w": 640}'}
    rows = _get(http, "/messages", service, select="id", **{"metadata->size->>w": "eq.640"})
    assert rows == [{"id": photo}]
    # In an embed: select, filter and order.
    [conv] = _get(
        http,
        "/conversations",
        service,
        id=f"eq.{C13}",
        select="id,messages(kind:metadata->>kind)",
        **{"messages.metadata->>kind": "eq.photo", "messages.order": "metadata->>kind.desc"},
    )
    assert conv["messages"] == [{"kind": "photo"}]


# ------------------------------------------------------------------ writes
def test_embedded_filters_shape_a_writes_answer(
    http: httpx.Client, service: dict[str, str], photo: str
) -> None:
    resp = http.patch(
        "/messages",
        params={
            "id": f"eq.{photo}",
            "select": "content,sender:profiles!sender_id(username)",
            "sender.username": "eq.nobody",
        },
        json={"content": "json: a photo"},
        headers={**service, "Prefer": "return=representation"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == [{"content": "json: a photo", "sender": None}]


# ------------------------------------------------------------------ errors
def test_a_path_naming_no_embed(http: httpx.Client, h1: dict[str, str]) -> None:
    expected = {
        "code": "PGRST108",
        "details": None,
        "hint": "Verify that 'nope' is included in the 'select' query parameter.",
        "message": "'nope' is not an embedded resource in this request",
    }
    for key, value in [
        ("nope.username", "eq.x"),
        ("nope.order", "id"),
        ("nope.limit", "1"),
        ("nope.or", "(id.eq.1)"),
        ("conversations.nope.id", "eq.1"),
    ]:
        resp = http.get(
            "/messages", params={"select": "id,conversations(id)", key: value}, headers=h1
        )
        assert resp.status_code == 400, (key, resp.text)
        assert resp.json() == expected, key
    # A column filter names its table's column: unknown is 42703.
    resp = http.get(
        "/messages",
        params={"select": "id,conversations(id)", "conversations.nope": "eq.1"},
        headers=h1,
    )
    assert resp.status_code == 400 and resp.json()["code"] == "42703"
    for key, value in [("conversations.order", "id.sideways"), ("conversations.limit", "x")]:
        resp = http.get(
            "/messages", params={"select": "id,conversations(id)", key: value}, headers=h1
        )
        assert resp.status_code == 400 and resp.json()["code"] == "PGRST100", key
