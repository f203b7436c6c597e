"""Embedding through views, as PostgREST 12 infers it: a view carries the foreign keys of
the tables whose columns it shows (``resorigtbl``/``resorigcol`` of its stored query's
target list), on either side, through views of views."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from conftest import CONVERSATIONS, MESSAGES_IN_12, conversation_id, fresh_database, user_id

from backend_checks.reference.server import ReferenceServer
from backend_checks.reference.view_keys import parse_node_tree, target_origins

MINE = {conversation_id(k) for k, members in CONVERSATIONS.items() if 1 in members}


def _get(http: httpx.Client, path: str, headers: dict[str, str], **params: str) -> Any:
    resp = http.get(path, params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _message_counts(db: psycopg.Connection[Any]) -> dict[str, int]:
    """Messages per conversation, from the database itself (other tests add some)."""
    rows = db.execute("SELECT conversation_id::text, count(*) FROM messages GROUP BY 1")
    return {str(c): int(n) for c, n in rows.fetchall()}


def test_a_view_embeds_the_table_whose_key_its_column_shows(
    http: httpx.Client, h1: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    # conversation_list.id is conversations.id: messages.conversation_id points at it.
    rows = _get(
        http, "/conversation_list", h1,
        select="id,messages!messages_conversation_id_fkey(conversation_id)",
    )  # fmt: skip
    counts = _message_counts(db)
    assert {r["id"] for r in rows} == MINE
    for row in rows:
        assert len(row["messages"]) == counts[row["id"]]
        assert {m["conversation_id"] for m in row["messages"]} == {row["id"]}
    assert counts[conversation_id("12")] >= MESSAGES_IN_12


def test_a_table_embeds_a_view_many_to_one(
    http: httpx.Client, h1: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    rows = _get(
        http, "/messages", h1,
        select="conversation_id,conversation_list!messages_conversation_id_fkey(id,type)",
        conversation_id=f"eq.{conversation_id('13')}",
    )  # fmt: skip
    assert len(rows) == _message_counts(db)[conversation_id("13")]
    for row in rows:
        assert row["conversation_list"] == {"id": row["conversation_id"], "type": "direct"}


def test_a_view_embeds_by_a_key_of_a_joined_table(http: httpx.Client, h1: dict[str, str]) -> None:
    # last_message_sender_id is messages.sender_id (a LATERAL subquery's): to profiles.
    # (Plain profiles(...) is ambiguous: last_message_id is messages.id, so the read
    # receipts join the view to profiles many-to-many as well, as in PostgREST.)
    rows = _get(
        http, "/conversation_list", h1,
        select="id,last_message_sender_id,profiles!messages_sender_id_fkey(id)",
    )  # fmt: skip
    assert len(rows) == len(MINE)
    for row in rows:
        assert row["profiles"] == {"id": row["last_message_sender_id"]}
    senders = {r["last_message_sender_id"] for r in rows}
    assert senders <= {user_id(n) for n in (1, 2, 3)}


def test_two_keys_between_a_view_and_a_table_are_ambiguous_as_in_postgrest(
    http: httpx.Client, h1: dict[str, str]
) -> None:
    # last_message_id is messages.id too, which messages.reply_to_id references.
    resp = http.get("/conversation_list", params={"select": "id,messages(id)"}, headers=h1)
    assert resp.status_code == 300, resp.text
    body = resp.json()
    assert body["code"] == "PGRST201"
    named = {d["relationship"].split(" ")[0] for d in body["details"]}
    assert named == {"messages_conversation_id_fkey", "messages_reply_to_id_fkey"}
    assert "messages!messages_conversation_id_fkey" in body["hint"]


def test_a_view_of_a_view_is_followed_down_to_the_table() -> None:
    with fresh_database("views") as (dsn, _):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                """CREATE TABLE public.teams (id int PRIMARY KEY, name text);
                   CREATE TABLE public.players (id int PRIMARY KEY, team_id int
                       REFERENCES public.teams (id), name text);
                   CREATE TABLE public.nodes (id int PRIMARY KEY,
                       parent_id int REFERENCES public.nodes (id));
                   INSERT INTO public.nodes VALUES (1, NULL), (2, 1);
                   CREATE VIEW public.squad AS SELECT id AS team, name FROM public.teams;
                   CREATE VIEW public.first_squad AS
                       SELECT s.team AS team_no, upper(s.name) AS loud FROM public.squad s;
                   INSERT INTO public.teams VALUES (1, 'red'), (2, 'blue');
                   INSERT INTO public.players VALUES (10, 1, 'ann'), (11, 1, 'bob'),
                       (12, 2, 'cy');
                   GRANT SELECT ON ALL TABLES IN SCHEMA public TO anon;
                   GRANT ALL ON ALL TABLES IN SCHEMA public TO service_role;"""
            )
        with ReferenceServer(dsn) as server:
            headers = {"apikey": server.anon_key}
            key = server.service_role_key
            service = {"apikey": key, "Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=f"{server.url}/rest/v1", timeout=15) as http:
                rows = _get(
                    http, "/first_squad", headers,
                    select="team_no,loud,players(name)", order="team_no",
                )  # fmt: skip
                back = _get(http, "/players", headers, select="name,first_squad(loud)", id="eq.12")
                # A computed column shows no table column: no key rides on it.
                none = http.get(
                    "/first_squad", params={"select": "loud,teams(id)"}, headers=headers
                )
                # The view shows teams' primary key: an upsert through it merges on it.
                merged = http.post(
                    "/squad", json={"team": 2, "name": "navy"},
                    headers={**service, "Prefer": "resolution=merge-duplicates"},
                )  # fmt: skip
                with psycopg.connect(dsn) as conn:
                    teams = conn.execute("SELECT id, name FROM public.teams ORDER BY id").fetchall()
                # A self reference's column name is its many-to-one side ...
                parent = _get(http, "/nodes", headers, select="id,parent_id(id)", id="eq.2")
                # ... until a view shows the referenced column: then two keys match.
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("CREATE VIEW public.node_ids AS SELECT id FROM public.nodes;"
                                 " GRANT SELECT ON public.node_ids TO anon")  # fmt: skip
                assert http.get("/node_ids", headers=headers).status_code == 200  # reloads
                two = http.get(
                    "/nodes", params={"select": "id,parent_id(id)"}, headers=headers
                ).json()
    assert rows == [
        {"team_no": 1, "loud": "RED", "players": [{"name": "ann"}, {"name": "bob"}]},
        {"team_no": 2, "loud": "BLUE", "players": [{"name": "cy"}]},
    ]
    assert back == [{"name": "cy", "first_squad": {"loud": "BLUE"}}]
    assert none.status_code == 400 and none.json()["code"] == "PGRST200", none.text
    assert merged.status_code == 201, merged.text
    assert teams == [(1, "red"), (2, "navy")]  # merged, not a duplicate key
    assert parent == [{"id": 2, "parent_id": {"id": 1}}]
    assert two["code"] == "PGRST201"
    assert {d["embedding"] for d in two["details"]} == {"nodes with nodes", "nodes with node_ids"}


def test_the_node_tree_reader_takes_escapes_nulls_and_datums() -> None:
    text = (
        r"({QUERY :commandType 1 :rtable ({RTE :alias <> :values ({CONST :consttype 23"
        r" :constvalue 4 [ 7 0 0 0 0 0 0 0 ] :location -1} {CONST :constvalue <>})}) "
        r":targetList ({TARGETENTRY :resno 1 :resname the\ team\(s\) :resorigtbl 16384"
        r" :resorigcol 2 :resjunk false} {TARGETENTRY :resno 2 :resname \42 :resorigtbl 0"
        r' :resorigcol 0 :resjunk false} {TARGETENTRY :resno 3 :resname "" :resorigtbl 5'
        r" :resorigcol 1 :resjunk false} {TARGETENTRY :resno 4 :resname hidden"
        r" :resorigtbl 9 :resorigcol 1 :resjunk true})})"
    )
    tree: Any = parse_node_tree(text)
    assert tree[0][""] == "QUERY"
    entries = tree[0]["targetList"]
    assert [e["resname"] for e in entries] == ["the team(s)", "42", "", "hidden"]
    assert tree[0]["rtable"][0]["values"][1]["constvalue"] is None
    # The view's column number -> the table's: computed and junk columns show none.
    assert target_origins(text) == {1: (16384, 2), 3: (5, 1)}
    with pytest.raises(ValueError, match="ends early"):
        parse_node_tree("({QUERY :targetList (")
