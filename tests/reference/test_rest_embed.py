"""Resource embedding against PostgREST 12's rules: which relationship a select item names,
300 ``PGRST201`` when several do, many-to-many through junction tables, one-to-one, and
self references (PostgREST's ``findRel`` in src/PostgREST/Plan.hs and ``addM2MRels`` in
src/PostgREST/SchemaCache.hs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from conftest import conversation_id, user_id


@pytest.fixture
def read_message(db: psycopg.Connection[Any]) -> Iterator[str]:
    """A message of conversation 13 read by testuser1 and testuser3, with one reply.

    Both are dated a day back so the conversation's last_message_at does not move, and
    both are deleted afterwards (the receipts go with them).
    """
    row = db.execute(
        "INSERT INTO messages (conversation_id, sender_id, content, created_at)"
        " VALUES (%s, %s, 'embed: read me', now() - interval '1 day') RETURNING id",
        (conversation_id("13"), user_id(1)),
    ).fetchone()
    assert row is not None
    message = str(row[0])
    db.execute(
        "INSERT INTO messages (conversation_id, sender_id, content, reply_to_id, created_at)"
        " VALUES (%s, %s, 'embed: a reply', %s, now() - interval '1 day')",
        (conversation_id("13"), user_id(3), message),
    )
    db.execute(
        "INSERT INTO message_read_receipts (message_id, user_id) VALUES (%s, %s), (%s, %s)",
        (message, user_id(1), message, user_id(3)),
    )
    yield message
    db.execute("DELETE FROM messages WHERE reply_to_id = %s OR id = %s", (message, message))


_SCRATCH_SQL = """
DROP TABLE IF EXISTS embed_ab, embed_ac_loose, embed_ad, embed_a_detail, embed_pair,
  embed_a, embed_b, embed_c, embed_d;
CREATE TABLE embed_a (id int PRIMARY KEY, name text);
CREATE TABLE embed_b (id int PRIMARY KEY, name text);
CREATE TABLE embed_c (id int PRIMARY KEY);
CREATE TABLE embed_d (id int PRIMARY KEY);
-- A junction: both foreign keys inside the primary key.
CREATE TABLE embed_ab (a_id int REFERENCES embed_a, b_id int REFERENCES embed_b,
  PRIMARY KEY (a_id, b_id));
-- Not a junction: its own surrogate key.
CREATE TABLE embed_ac_loose (id serial PRIMARY KEY, a_id int REFERENCES embed_a,
  c_id int REFERENCES embed_c);
-- Not a junction: d_id alone is unique, so that key is one-to-one, not many-to-one.
CREATE TABLE embed_ad (a_id int REFERENCES embed_a, d_id int UNIQUE REFERENCES embed_d,
  PRIMARY KEY (a_id, d_id));
-- One-to-one: the foreign key is the primary key.
CREATE TABLE embed_a_detail (a_id int PRIMARY KEY REFERENCES embed_a, note text);
-- Two foreign keys to one table.
CREATE TABLE embed_pair (id int PRIMARY KEY, left_id int REFERENCES embed_a,
  right_id int REFERENCES embed_a);
INSERT INTO embed_a VALUES (1, 'a1'), (2, 'a2');
INSERT INTO embed_b VALUES (1, 'b1'), (2, 'b2'), (3, 'b3');
INSERT INTO embed_ab VALUES (1, 1), (1, 3);
INSERT INTO embed_a_detail VALUES (1, 'detail of a1');
INSERT INTO embed_pair VALUES (1, 1, 2);
GRANT ALL ON embed_a, embed_b, embed_c, embed_d, embed_ab, embed_ac_loose, embed_ad,
  embed_a_detail, embed_pair TO authenticated, service_role;
"""


@pytest.fixture(scope="module")
def scratch(scratch_dsn: str, http: httpx.Client, service: dict[str, str]) -> Iterator[None]:
    """Tables of their own (no key to the messaging schema, so its relationships stay
    as they are for the other tests); dropped afterwards."""
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(_SCRATCH_SQL)
    # A table the snapshot lacks makes the server reload its catalog.
    assert http.get("/embed_a", headers=service).status_code == 200
    yield
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(
            "DROP TABLE embed_ab, embed_ac_loose, embed_ad, embed_a_detail, embed_pair,"
            " embed_a, embed_b, embed_c, embed_d"
        )


def _get(http: httpx.Client, path: str, headers: dict[str, str], **params: str) -> Any:
    resp = http.get(path, params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_direct_key_and_junction_to_one_table_are_ambiguous(
    http: httpx.Client, h1: dict[str, str]
) -> None:
    resp = http.get("/messages", params={"select": "id,sender:profiles(username)"}, headers=h1)
    assert resp.status_code == 300
    assert resp.json() == {
        "code": "PGRST201",
        "details": [
            {
                "cardinality": "many-to-one",
                "embedding": "messages with profiles",
                "relationship": "messages_sender_id_fkey using messages(sender_id) and"
                " profiles(id)",
            },
            {
                "cardinality": "many-to-many",
                "embedding": "messages with profiles",
                "relationship": "message_read_receipts using"
                " message_read_receipts_message_id_fkey(message_id) and"
                " message_read_receipts_user_id_fkey(user_id)",
            },
        ],
        "hint": "Try changing 'profiles' to one of the following:"
        " 'profiles!messages_sender_id_fkey', 'profiles!message_read_receipts'."
        " Find the desired relationship in the 'details' key.",
        "message": "Could not embed because more than one relationship was found for"
        " 'messages' and 'profiles'",
    }
    back = http.get("/profiles", params={"select": "id,messages(id)"}, headers=h1)
    assert back.status_code == 300
    assert [d["cardinality"] for d in back.json()["details"]] == ["one-to-many", "many-to-many"]
    assert back.json()["details"][0]["relationship"] == (
        "messages_sender_id_fkey using profiles(id) and messages(sender_id)"
    )


@pytest.mark.parametrize(
    ("select", "key"),
    [
        ("sender:profiles!sender_id(username)", "sender"),
        ("sender:profiles!messages_sender_id_fkey(username)", "sender"),
        ("sender_id(username)", "sender_id"),  # the column as the target
        ("messages_sender_id_fkey(username)", "messages_sender_id_fkey"),  # the key
    ],
)
def test_the_direct_key_named_gives_the_sender(
    http: httpx.Client, h1: dict[str, str], select: str, key: str
) -> None:
    rows = _get(http, "/messages", h1, select=f"id,{select}",
                conversation_id=f"eq.{conversation_id('12')}", limit="2")  # fmt: skip
    assert len(rows) == 2 and rows[0][key]["username"].startswith("testuser")


def test_many_to_many_through_the_junction(
    http: httpx.Client, h1: dict[str, str], service: dict[str, str], read_message: str
) -> None:
    select = "id,readers:profiles!message_read_receipts(username)"
    [row] = _get(http, "/messages", service, select=select, id=f"eq.{read_message}")
    assert sorted(r["username"] for r in row["readers"]) == ["testuser1", "testuser3"]
    # RLS applies to the junction too: a user sees only their own receipts.
    [row] = _get(http, "/messages", h1, select=select, id=f"eq.{read_message}")
    assert [r["username"] for r in row["readers"]] == ["testuser1"]
    [user] = _get(http, "/profiles", service, select="username,messages!message_read_receipts(id)",
                  id=f"eq.{user_id(3)}")  # fmt: skip
    assert [m["id"] for m in user["messages"]] == [read_message]
    # Embeds nest inside a many-to-many one, and `*` there is the target's columns only.
    nested = "id,profiles!message_read_receipts(*,conversations(id))"
    [row] = _get(http, "/messages", service, select=nested, id=f"eq.{read_message}")
    readers = {p["username"]: p for p in row["profiles"]}
    assert "message_id" not in readers["testuser1"] and "read_at" not in readers["testuser1"]
    assert {c["id"] for c in readers["testuser1"]["conversations"]} == {
        conversation_id("12"), conversation_id("13")}  # fmt: skip
    # Unread messages embed an empty array.
    rows = _get(http, "/messages", service, select=select, id=f"neq.{read_message}",
                conversation_id=f"eq.{conversation_id('23')}")  # fmt: skip
    assert rows and all(r["readers"] == [] for r in rows)


def test_self_reference(http: httpx.Client, service: dict[str, str], read_message: str) -> None:
    # Without a hint the table name means the one-to-many side (the replies) ...
    [row] = _get(http, "/messages", service, select="id,replies:messages(content)",
                 id=f"eq.{read_message}")  # fmt: skip
    assert row["replies"] == [{"content": "embed: a reply"}]
    # ... and the column name the many-to-one side (the parent), where that is the only
    # key on the column: conversation_list shows messages.id (last_message_id), so the
    # key joins messages to that view by reply_to_id too, and PostgREST finds two
    # (test_rest_embed_views has the rule on a table no view shows).
    resp = http.get("/messages", params={"select": "content,reply_to_id(content)"},
                    headers=service)  # fmt: skip
    assert resp.status_code == 300 and resp.json()["code"] == "PGRST201"
    assert {d["embedding"] for d in resp.json()["details"]} == {
        "messages with messages",
        "messages with conversation_list",
    }
    # A column hint on a self reference picks the one-to-many side too.
    [row] = _get(http, "/messages", service, select="id,replies:messages!reply_to_id(content)",
                 id=f"eq.{read_message}")  # fmt: skip
    assert row["replies"] == [{"content": "embed: a reply"}]
    # PostgREST 12 takes no constraint-name hint on a self reference.
    resp = http.get("/messages", params={"select": "id,messages!messages_reply_to_id_fkey(id)"},
                    headers=service)  # fmt: skip
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST200"


@pytest.mark.usefixtures("scratch")
def test_junction_rule(http: httpx.Client, service: dict[str, str]) -> None:
    rows = _get(http, "/embed_a", service, select="id,embed_b(name)", order="id")
    assert rows == [{"id": 1, "embed_b": [{"name": "b1"}, {"name": "b3"}]},
                    {"id": 2, "embed_b": []}]  # fmt: skip
    [b3] = _get(http, "/embed_b", service, select="id,embed_a!embed_ab(name)", id="eq.3")
    assert b3 == {"id": 3, "embed_a": [{"name": "a1"}]}
    # A key outside the primary key, or a one-to-one key, makes no junction.
    for target in ("embed_c", "embed_d"):
        resp = http.get("/embed_a", params={"select": f"id,{target}(*)"}, headers=service)
        assert resp.status_code == 400 and resp.json()["code"] == "PGRST200", target
    # The tables in between embed as plain one-to-many.
    [a1] = _get(http, "/embed_a", service, select="id,embed_ab(b_id)", id="eq.1")
    assert sorted(r["b_id"] for r in a1["embed_ab"]) == [1, 3]


@pytest.mark.usefixtures("scratch")
def test_one_to_one_is_an_object_both_ways(http: httpx.Client, service: dict[str, str]) -> None:
    rows = _get(http, "/embed_a", service, select="id,embed_a_detail(note)", order="id")
    assert rows == [{"id": 1, "embed_a_detail": {"note": "detail of a1"}},
                    {"id": 2, "embed_a_detail": None}]  # fmt: skip
    [detail] = _get(http, "/embed_a_detail", service, select="note,embed_a(name)")
    assert detail["embed_a"] == {"name": "a1"}


@pytest.mark.usefixtures("scratch")
def test_two_keys_to_one_table(http: httpx.Client, service: dict[str, str]) -> None:
    resp = http.get("/embed_pair", params={"select": "id,embed_a(name)"}, headers=service)
    assert resp.status_code == 300
    body = resp.json()
    assert [d["relationship"] for d in body["details"]] == [
        "embed_pair_left_id_fkey using embed_pair(left_id) and embed_a(id)",
        "embed_pair_right_id_fkey using embed_pair(right_id) and embed_a(id)",
    ]
    assert body["hint"] == (
        "Try changing 'embed_a' to one of the following: 'embed_a!embed_pair_left_id_fkey',"
        " 'embed_a!embed_pair_right_id_fkey'. Find the desired relationship in the 'details'"
        " key."
    )
    both = "l:embed_a!left_id(name),r:embed_a!embed_pair_right_id_fkey(name)"
    [row] = _get(http, "/embed_pair", service, select=both)
    assert row == {"l": {"name": "a1"}, "r": {"name": "a2"}}
    [a2] = _get(http, "/embed_a", service, select="id,embed_pair!right_id(id)", id="eq.2")
    assert a2["embed_pair"] == [{"id": 1}]


@pytest.mark.usefixtures("scratch")
def test_embedding_in_a_write(http: httpx.Client, service: dict[str, str]) -> None:
    resp = http.patch(
        "/embed_a", params={"id": "eq.1", "select": "name,embed_b(name),embed_a_detail(note)"},
        json={"name": "a1"}, headers={**service, "Prefer": "return=representation"},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    [row] = resp.json()
    assert sorted(b["name"] for b in row["embed_b"]) == ["b1", "b3"]
    assert row["embed_a_detail"] == {"note": "detail of a1"}


def test_no_relationship(http: httpx.Client, h1: dict[str, str]) -> None:
    resp = http.get("/messages", params={"select": "id,nope(*)"}, headers=h1)
    assert resp.status_code == 400
    assert resp.json()["message"] == (
        "Could not find a relationship between 'messages' and 'nope' in the schema cache"
    )
    assert resp.json()["details"] == (
        "Searched for a foreign key relationship between 'messages' and 'nope' in the schema"
        " 'public', but no matches were found."
    )
    hinted = http.get("/messages", params={"select": "id,profiles!nope(*)"}, headers=h1)
    assert hinted.status_code == 400 and hinted.json()["details"] == (
        "Searched for a foreign key relationship between 'messages' and 'profiles' using the"
        " hint 'nope' in the schema 'public', but no matches were found."
    )
