"""``/rest/v1`` semantics against PostgREST's: filters, order, ranges, counts, writes, rpc,
errors and roles (raw HTTP, so the exact headers and statuses are checked)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
import pytest
from conftest import conversation_id, user_id, user_token

from backend_checks.reference.server import ReferenceServer

MINE = conversation_id("12")
OTHER = conversation_id("34")


@pytest.fixture(scope="module")
def items(scratch_dsn: str) -> str:
    """A plain table without RLS for write semantics (granted to authenticated)."""
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.rest_items (id integer PRIMARY KEY,"
            " label text UNIQUE, n integer, tags text[], data jsonb DEFAULT '{}')"
        )
        conn.execute("GRANT ALL ON public.rest_items TO authenticated, service_role")
        conn.execute("TRUNCATE public.rest_items")
        conn.execute(
            "INSERT INTO public.rest_items SELECT i, 'item ' || i,"
            " CASE WHEN i % 5 = 0 THEN NULL ELSE i END, ARRAY['t' || (i % 3)],"
            " jsonb_build_object('i', i) FROM generate_series(1, 30) i"
        )
    return "rest_items"


def test_filters(http: httpx.Client, h1: dict[str, str], items: str) -> None:
    def ids(**params: str) -> list[int]:
        resp = http.get(f"/{items}", params={"select": "id", "order": "id", **params}, headers=h1)
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()]

    assert ids(id="lt.4") == [1, 2, 3]
    assert ids(id="gte.29") == [29, 30]
    assert ids(id="in.(2,4,6)") == [2, 4, 6]
    assert ids(n="is.null") == [5, 10, 15, 20, 25, 30]
    assert ids(id="lte.6", n="not.is.null") == [1, 2, 3, 4, 6]
    assert ids(label="like.item 1*") == [1, *range(10, 20)]
    assert ids(label="ilike.ITEM 2?", id="lt.3") == []
    assert ids(tags="cs.{t0}", id="lte.9") == [3, 6, 9]
    assert ids(id="neq.1", n="lt.3") == [2]
    assert ids(**{"or": "(id.eq.1,id.eq.30)"}) == [1, 30]
    assert ids(**{"or": "(id.eq.1,and(id.gt.28,n.not.is.null))"}) == [1, 29]
    assert ids(id="not.in.(1,2,3)", n="lt.6") == [4]
    assert ids(label='in.("item 1","item,2")') == [1]
    assert ids(**{"data->>i": "eq.3"}) == [3]
    assert ids(**{"data->i": "gt.28"}) == [29, 30]
    assert ids(**{"or": "(data->>i.eq.4,id.eq.5)"}) == [4, 5]
    assert ids(order="data->i.desc", limit="2") == [30, 29]


def test_json_path_errors(http: httpx.Client, h1: dict[str, str], items: str) -> None:
    resp = http.get(f"/{items}", params={"nope->>a": "eq.1"}, headers=h1)
    assert resp.status_code == 400 and resp.json()["code"] == "42703"
    # As PostgREST 12, a path on a column that is not json reads to_jsonb(column): the
    # text array's element compares as jsonb with ->, and as text with ->>.
    not_json = http.get(f"/{items}", params={"tags->0": "eq.t1"}, headers=h1)
    assert not_json.status_code == 400 and not_json.json()["code"] == "22P02"
    first = http.get(f"/{items}", params={"tags->>0": "eq.t1", "id": "lte.7", "select": "id"},
                     headers=h1)  # fmt: skip
    assert first.status_code == 200 and first.json() == [{"id": 1}, {"id": 4}, {"id": 7}]
    resp = http.get(f"/{items}", params={"data->>": "eq.1"}, headers=h1)
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST100"


def test_select_order_range_count(http: httpx.Client, h1: dict[str, str], items: str) -> None:
    resp = http.get(
        f"/{items}",
        params={"select": "key:id,n", "order": "n.desc.nullsfirst,id.asc"},
        headers={**h1, "Range": "0-6", "Prefer": "count=exact"},
    )
    assert resp.status_code == 206  # a part of a counted total, as PostgREST
    assert resp.headers["Content-Range"] == "0-6/30"
    rows = resp.json()
    assert list(rows[0]) == ["key", "n"]
    assert [r["n"] for r in rows[:6]] == [None] * 6 and rows[6]["n"] == 29
    page = http.get(f"/{items}", params={"order": "id", "limit": "5", "offset": "10"}, headers=h1)
    assert [r["id"] for r in page.json()] == [11, 12, 13, 14, 15]
    assert page.headers["Content-Range"] == "10-14/*"
    head = http.head(f"/{items}", params={"id": "gt.25"}, headers={**h1, "Prefer": "count=exact"})
    assert head.status_code == 200 and head.headers["Content-Range"] == "0-4/5"
    empty = http.get(f"/{items}", params={"id": "gt.99"}, headers={**h1, "Prefer": "count=exact"})
    assert empty.json() == [] and empty.headers["Content-Range"] == "*/0"
    assert empty.status_code == 200
    counted = {**h1, "Prefer": "count=exact"}
    whole = http.get(f"/{items}", params={"id": "gt.25"}, headers=counted)
    assert whole.status_code == 200 and whole.headers["Content-Range"] == "0-4/5"
    past = http.get(f"/{items}", params={"offset": "100"}, headers=counted)
    assert past.status_code == 416 and past.json()["code"] == "PGRST103"
    assert "only 30 rows" in past.json()["details"]
    uncounted = http.get(f"/{items}", params={"offset": "100"}, headers=h1)
    assert uncounted.status_code == 200 and uncounted.json() == []


def test_single_object(http: httpx.Client, h1: dict[str, str], items: str) -> None:
    single = {**h1, "Accept": "application/vnd.pgrst.object+json"}
    one = http.get(f"/{items}", params={"id": "eq.3"}, headers=single)
    assert one.status_code == 200 and one.json()["label"] == "item 3"
    many = http.get(f"/{items}", params={"id": "lt.3"}, headers=single)
    assert many.status_code == 406 and many.json()["code"] == "PGRST116"


def test_writes(http: httpx.Client, h1: dict[str, str], items: str) -> None:
    rep = {**h1, "Prefer": "return=representation"}
    made = http.post(f"/{items}", json=[{"id": 101, "label": "a", "tags": ["x", "y"]},
                                        {"id": 102, "label": "b", "data": {"k": [1]}}],
                     headers=rep)  # fmt: skip
    assert made.status_code == 201, made.text
    assert [r["tags"] for r in made.json()] == [["x", "y"], None]
    assert made.json()[1]["data"] == {"k": [1]}
    quiet = http.post(f"/{items}", json={"id": 103, "label": "c"}, headers=h1)
    assert quiet.status_code == 201 and quiet.content == b""
    dup = http.post(f"/{items}", json={"id": 104, "label": "a"}, headers=h1)
    assert dup.status_code == 409 and dup.json()["code"] == "23505"
    upsert = http.post(
        f"/{items}", params={"on_conflict": "id"}, json={"id": 103, "label": "c2", "n": 7},
        headers={**rep, "Prefer": "return=representation,resolution=merge-duplicates"},
    )  # fmt: skip
    assert upsert.status_code == 201 and upsert.json()[0]["label"] == "c2"
    changed = http.patch(f"/{items}", params={"id": "in.(101,102)"}, json={"n": 42}, headers=rep)
    assert changed.status_code == 200 and {r["n"] for r in changed.json()} == {42}
    gone = http.delete(f"/{items}", params={"id": "gte.101"}, headers=rep)
    assert sorted(r["id"] for r in gone.json()) == [101, 102, 103]
    none_left = http.delete(f"/{items}", params={"id": "gte.101"}, headers=h1)
    assert none_left.status_code == 204
    bad_type = http.post(f"/{items}", json={"id": "x"}, headers=h1)
    assert bad_type.status_code == 400 and bad_type.json()["code"] == "22P02"


def test_rpc(http: httpx.Client, h1: dict[str, str]) -> None:
    post = http.post("/rpc/search_messages", json={"p_query": "pizza", "p_limit": 2}, headers=h1)
    assert post.status_code == 200 and len(post.json()) == 2
    get = http.get("/rpc/search_messages", params={"p_query": "pizza", "select": "content",
                                                   "limit": "1"}, headers=h1)  # fmt: skip
    assert get.status_code == 200 and list(get.json()[0]) == ["content"]
    scalar = http.post("/rpc/mark_as_read", json={"p_conversation_id": MINE}, headers=h1)
    assert scalar.status_code == 200 and isinstance(scalar.json(), int)
    sent = http.post("/rpc/send_message", json={"p_conversation_id": MINE, "p_content": "r"},
                     headers=h1)  # fmt: skip
    assert sent.status_code == 200 and sent.json()["content"] == "r"
    refused = http.post("/rpc/send_message", json={"p_conversation_id": OTHER,
                                                    "p_content": "r"}, headers=h1)  # fmt: skip
    assert refused.status_code == 403 and refused.json()["code"] == "42501"
    unknown = http.post("/rpc/search_messages", json={"nope": 1}, headers=h1)
    assert unknown.status_code == 404 and unknown.json()["code"] == "PGRST202"
    volatile_get = http.get("/rpc/send_message", params={"p_conversation_id": MINE,
                                                         "p_content": "x"}, headers=h1)  # fmt: skip
    assert volatile_get.status_code == 405  # read-only transaction, as PostgREST


def test_errors_and_roles(
    http: httpx.Client, h1: dict[str, str], service: dict[str, str], server: ReferenceServer
) -> None:
    assert http.get("/nope", headers=h1).json()["code"] == "PGRST205"
    assert http.get("/nope", headers=h1).status_code == 404
    bad_col = http.get("/messages", params={"nope": "eq.1"}, headers=h1)
    assert bad_col.status_code == 400 and bad_col.json()["code"] == "42703"
    bad_op = http.get("/messages", params={"id": "zz.1"}, headers=h1)
    assert bad_op.status_code == 400 and bad_op.json()["code"] == "PGRST100"
    anon = http.get("/messages", headers={"apikey": server.anon_key})
    assert anon.status_code == 401 and anon.json()["code"] == "42501"
    expired = user_token(server, 1, exp=int(time.time()) - 60)
    resp = http.get("/messages", headers={"apikey": server.anon_key,
                                          "Authorization": f"Bearer {expired}"})  # fmt: skip
    assert resp.status_code == 401 and resp.json()["code"] == "PGRST303"
    token = user_token(server, 1)
    head, body, sig = token.split(".")
    tampered = f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{sig}"
    resp = http.get("/messages", headers={"apikey": server.anon_key,
                                          "Authorization": f"Bearer {tampered}"})  # fmt: skip
    assert resp.status_code == 401 and resp.json()["code"] == "PGRST301"
    nokey = http.get("/messages")
    assert nokey.status_code == 401
    everyone = http.get("/conversations", params={"select": "id"}, headers=service)
    mine = http.get("/conversations", params={"select": "id"}, headers=h1)
    assert len(everyone.json()) == 4 and len(mine.json()) == 2
    assert http.get("/messages", params={"select": "x:nothing(*)"}, headers=h1).status_code == 400


def test_embedding(http: httpx.Client, h1: dict[str, str]) -> None:
    # profiles!sender_id: messages also reach profiles through message_read_receipts,
    # so a bare profiles(...) is ambiguous (300 PGRST201) as in PostgREST.
    params = {"select": "id,content,sender:profiles!sender_id(username)",
              "conversation_id": f"eq.{MINE}", "order": "created_at.desc",
              "limit": "2"}  # fmt: skip
    rows = http.get("/messages", params=params, headers=h1).json()
    assert len(rows) == 2 and rows[0]["sender"]["username"] in ("testuser1", "testuser2")
    conv = http.get("/conversations", params={"select": "id,messages(id),creator:profiles(*)",
                                               "id": f"eq.{MINE}"}, headers=h1).json()  # fmt: skip
    assert len(conv[0]["messages"]) >= 100 and conv[0]["creator"]["id"] == user_id(1)
    nested = http.get("/messages", params={"select": "id,conversations(id,profiles(username))",
                                            "limit": "1"}, headers=h1).json()  # fmt: skip
    assert nested[0]["conversations"]["profiles"]["username"].startswith("testuser")
    # RLS applies inside embeds too: testuser4 sees no messages of conversation 12.
    foreign = http.get("/conversations", params={"select": "id,messages(id)"}, headers=h1).json()
    assert {c["id"] for c in foreign} == {MINE, conversation_id("13")}
    none = http.get("/messages", params={"select": "id,nope(*)"}, headers=h1)
    assert none.status_code == 400 and none.json()["code"] == "PGRST200"


def test_absurd_bodies_are_clean_4xx(http: httpx.Client, h1: dict[str, str], items: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for path in (f"/{items}", "/rpc/search_messages"):
        resp = http.post(path, content=deep, headers={**h1, "Content-Type": "application/json"})
        assert resp.status_code == 400, resp.text
    bad = http.post(f"/{items}", content=b"\xff\xfe", headers=h1)
    assert bad.status_code == 400


def test_columns_added_after_start_are_found(
    http: httpx.Client, h1: dict[str, str], items: str, scratch_dsn: str
) -> None:
    http.get(f"/{items}", params={"limit": "1"}, headers=h1)  # the catalog is loaded
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.rest_items ADD COLUMN IF NOT EXISTS late text")
    time.sleep(1.1)  # reloads are rate-limited to one a second
    resp = http.get(f"/{items}", params={"select": "id,late", "id": "eq.1"}, headers=h1)
    assert resp.status_code == 200 and resp.json() == [{"id": 1, "late": None}], resp.text


def test_json_is_gzipped_for_clients_that_take_it(
    http: httpx.Client, h1: dict[str, str], items: str
) -> None:
    url = f"/{items}?select=id,label,tags&order=id"
    plain = http.get(url, headers={**h1, "Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    zipped = http.get(url, headers={**h1, "Accept-Encoding": "gzip, deflate, br"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["vary"]
    # Same rows, fewer bytes on the wire (httpx decodes; num_bytes_downloaded is the wire).
    assert zipped.json() == plain.json() and len(plain.json()) == 30
    assert zipped.num_bytes_downloaded < plain.num_bytes_downloaded / 2
    refused = http.get(url, headers={**h1, "Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    # Below Envoy's 30-byte minimum the body goes as it is.
    tiny = http.get(f"/{items}?select=id&id=eq.1", headers={**h1, "Accept-Encoding": "gzip"})
    assert tiny.text == '[{"id":1}]' and "content-encoding" not in tiny.headers


@pytest.fixture
def guarded(scratch_dsn: str) -> str:
    """A small table these tests may rewrite whole: the shared ``rest_items`` stays as is."""
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.rest_guarded (id integer PRIMARY KEY,"
                     " n integer)")  # fmt: skip
        conn.execute("GRANT ALL ON public.rest_guarded TO authenticated, service_role")
        conn.execute("TRUNCATE public.rest_guarded")
        conn.execute("INSERT INTO public.rest_guarded SELECT i, i FROM generate_series(1, 5) i")
    return "rest_guarded"


def test_writes_without_a_filter_are_refused_as_pg_safeupdate_does(
    http: httpx.Client, h1: dict[str, str], service: dict[str, str], guarded: str
) -> None:
    for headers in (h1, service):
        patch = http.patch(f"/{guarded}", json={"n": 0}, headers=headers)
        assert patch.status_code == 400, patch.text
        assert patch.json() == {"code": "21000", "message": "UPDATE requires a WHERE clause",
                                "details": None, "hint": None}  # fmt: skip
        delete = http.delete(f"/{guarded}", headers=headers)
        assert delete.status_code == 400 and delete.json()["code"] == "21000", delete.text
        assert delete.json()["message"] == "DELETE requires a WHERE clause"
    assert len(http.get(f"/{guarded}", params={"n": "gt.0"}, headers=h1).json()) == 5
    # A filter that matches every row is a WHERE clause: allowed, as on Supabase.
    every = {"id": "not.is.null"}
    rep = {**h1, "Prefer": "return=representation"}
    assert len(http.patch(f"/{guarded}", params=every, json={"n": 0}, headers=rep).json()) == 5
    assert len(http.delete(f"/{guarded}", params=every, headers=rep).json()) == 5


def test_an_upsert_of_only_the_key_returns_its_row(
    http: httpx.Client, h1: dict[str, str], guarded: str
) -> None:
    merge = {**h1, "Prefer": "return=representation,resolution=merge-duplicates"}
    again = http.post(f"/{guarded}", params={"on_conflict": "id"}, json={"id": 2}, headers=merge)
    assert again.status_code == 201 and again.json() == [{"id": 2, "n": 2}], again.text
    fresh = http.post(f"/{guarded}", json=[{"id": 9}], headers=merge)
    assert fresh.json() == [{"id": 9, "n": None}], fresh.text
    ignore = {**h1, "Prefer": "return=representation,resolution=ignore-duplicates"}
    assert http.post(f"/{guarded}", json={"id": 2}, headers=ignore).json() == []


def test_unserved_media_types_are_refused(
    http: httpx.Client, h1: dict[str, str], guarded: str
) -> None:
    xml = http.get(f"/{guarded}", headers={**h1, "Accept": "application/xml"})
    assert xml.status_code == 406, xml.text
    assert xml.json()["code"] == "PGRST107" and xml.json()["details"] is None
    assert xml.json()["message"] == "None of these media types are available: application/xml"
    for accept in ("application/json, text/plain, */*", "application/json;q=0.9", "*/*"):
        assert http.get(f"/{guarded}", headers={**h1, "Accept": accept}).status_code == 200


def test_aggregates_are_refused_as_on_supabase(
    http: httpx.Client, h1: dict[str, str], guarded: str
) -> None:
    for select in ("count()", "id,n.sum()", "total:n.max()::int", "id,count()"):
        agg = http.get(f"/{guarded}", params={"select": select}, headers=h1)
        assert agg.status_code == 400, (select, agg.text)
        assert agg.json()["code"] == "PGRST123", agg.text
        assert agg.json()["message"] == "Use of aggregate functions is not allowed"


def test_a_single_object_write_of_other_than_one_row_is_rolled_back(
    http: httpx.Client, h1: dict[str, str], items: str, scratch_dsn: str
) -> None:
    """``.update(...).select().single()`` (supabase-js) on two rows: PostgREST answers 406
    and rolls the write back, whatever ``return=`` asks; nothing of it may stay."""
    single = {**h1, "Accept": "application/vnd.pgrst.object+json"}
    rep = {**single, "Prefer": "return=representation"}

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(scratch_dsn, autocommit=True) as conn:
            return conn.execute(f"SELECT * FROM {items} WHERE id >= 21 ORDER BY id").fetchall()

    before = rows()
    writes = [
        http.patch(f"/{items}", params={"id": "in.(21,22)"}, json={"n": -1}, headers=rep),
        http.patch(f"/{items}", params={"id": "in.(21,22)"}, json={"n": -1}, headers=single),
        http.patch(f"/{items}", params={"id": "eq.999"}, json={"n": -1}, headers=rep),
        http.post(f"/{items}", json=[{"id": 201, "label": "s1"}, {"id": 202, "label": "s2"}],
                  headers=rep),
        http.delete(f"/{items}", params={"id": "in.(23,24)"}, headers=rep),
    ]  # fmt: skip
    for resp in writes:
        assert resp.status_code == 406, (resp.request.method, resp.text)
        assert resp.json()["code"] == "PGRST116"
    assert rows() == before
    one = http.patch(f"/{items}", params={"id": "eq.21"}, json={"n": 21}, headers=rep)
    assert one.status_code == 200 and one.json()["id"] == 21
    quiet = http.patch(f"/{items}", params={"id": "eq.21"}, json={"n": 21}, headers=single)
    assert quiet.status_code == 204


def test_a_single_object_rpc_of_other_than_one_row_is_rolled_back(
    http: httpx.Client, h1: dict[str, str], items: str, scratch_dsn: str
) -> None:
    """``.rpc(...).single()`` on a function returning two rows: 406, and what the function
    wrote is rolled back (PostgREST runs the call in the transaction it aborts)."""
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE OR REPLACE FUNCTION public.rest_add_two(p_from integer)"
            f" RETURNS SETOF public.{items} LANGUAGE sql AS $$"
            f" INSERT INTO public.{items} (id, label) VALUES (p_from, 'rpc ' || p_from),"
            f" (p_from + 1, 'rpc ' || (p_from + 1)) RETURNING * $$"
        )
        conn.execute("GRANT EXECUTE ON FUNCTION public.rest_add_two(integer) TO authenticated")
    single = {**h1, "Accept": "application/vnd.pgrst.object+json"}
    two = http.post("/rpc/rest_add_two", json={"p_from": 301}, headers=single)
    assert two.status_code == 406, two.text
    assert two.json()["code"] == "PGRST116"
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        kept = conn.execute(f"SELECT count(*) FROM public.{items} WHERE id >= 301").fetchone()
    assert kept == (0,), "the rows of a refused call stayed"
    one = http.post("/rpc/rest_add_two", json={"p_from": 311}, headers=h1)
    assert one.status_code == 200 and [r["id"] for r in one.json()] == [311, 312]
