"""No SQL is ever built from request text: property-based tests of the REST layer.

Two levels. The query builder: whatever the filter, select, order and value text, the
composed SQL never contains a value (values are parameters) and names only catalog
columns. The live server: arbitrary filter strings and values (quotes, semicolons,
parentheses, unicode, NULs) get 200 or a clean PostgREST 4xx, never a 5xx, and a canary
table that a successful injection would drop or empty survives.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend_checks.reference import parse, query, readplan
from backend_checks.reference.catalog import Catalog, Column, ForeignKey, Relation
from backend_checks.reference.errors import ApiError
from backend_checks.reference.server import ReferenceServer

_REL = Relation(
    "public",
    "fuzz_items",
    "r",
    {n: Column(n, t, i) for i, (n, t) in enumerate(
        [("id", "integer"), ("label", "text"), ("n", "integer"), ("tags", "text[]"),
         ("data", "jsonb")], 1)},
    ("id",),
)  # fmt: skip
_COLUMNS = list(_REL.columns)
_OPS = sorted(parse.FILTER_OPERATORS)

# Text that tries hard: SQL metacharacters, PostgREST syntax, unicode, NUL.
_pieces = st.sampled_from(
    [
        *"'\";,()[]{}.:*%_-\\/ =<>!|&$#@`~^+\n\t\x00",
        *["--", "/*", "*/", "$$", "DROP", "SELECT", "canary", "é", "😀", "\u202e", "ǅ"],
        *"abcxyz019",
    ]
)
_nasty = st.lists(_pieces, max_size=12).map("".join)
_column = st.one_of(st.sampled_from(_COLUMNS), _nasty)
# Against the server, favour real columns so that values reach the database more often.
_live_column = st.one_of(st.sampled_from(_COLUMNS), st.sampled_from(_COLUMNS), _nasty)
_live_op = st.one_of(st.sampled_from(_OPS), st.sampled_from(_OPS), _nasty)
_op = st.one_of(st.sampled_from(_OPS), _nasty)
_filter_value = st.builds(
    lambda neg, op, value: ("not." if neg else "") + f"{op}.{value}",
    st.booleans(),
    _op,
    st.one_of(_nasty, st.builds(lambda v: f"({v})", _nasty)),
)
_live_filter = st.builds(
    lambda neg, op, value: ("not." if neg else "") + f"{op}.{value}",
    st.booleans(),
    _live_op,
    st.one_of(_nasty, st.builds(lambda v: f"({v})", _nasty)),
)


@given(column=_column, value=_filter_value, select=_nasty, order=_nasty, marker=_nasty)
@settings(max_examples=300, deadline=None)
def test_composed_sql_carries_no_request_text(
    column: str, value: str, select: str, order: str, marker: str
) -> None:
    try:
        cond = parse.parse_filter_param(column, value + marker)
        items = parse.parse_select(select or None)
        terms = parse.parse_order(order or None)
        statement, params = query.read_sql(_REL, items, [cond], terms, 10, 0)
    except ApiError as exc:
        assert 400 <= exc.status < 500
        return
    text = statement.as_string(None)
    # Every identifier in the SQL is a catalog column (or our fixed aliases), quoted.
    for ident in _quoted_identifiers(text):
        assert ident in _REL.columns or ident in ("public", "fuzz_items"), ident
    # The value (and the marker in it) travel as parameters, never inside the SQL text.
    if len(marker) > 3 and marker.strip() and marker not in _COLUMNS:
        assert marker not in text.replace('"', "")
    assert "%s" in text or cond.op == "is" or (cond.op == "in" and not cond.value)
    assert params.count(10) >= 1


def _quoted_identifiers(text: str) -> list[str]:
    out, i = [], 0
    while (start := text.find('"', i)) != -1:
        end = start + 1
        while True:
            end = text.index('"', end)
            if text[end : end + 2] == '""':
                end += 2
                continue
            break
        out.append(text[start + 1 : end].replace('""', '"'))
        i = end + 1
    return out


# ------------------------------------------------------------------ against the server
@pytest.fixture(scope="module")
def fuzz_env(server: ReferenceServer, scratch_dsn: str) -> Iterator[dict[str, Any]]:
    """The fuzz table, a canary table, and a signed-in user's token."""
    canary = f"canary_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.fuzz_items (id serial PRIMARY KEY, label text,"
            " n integer, tags text[], data jsonb)"
        )
        conn.execute("GRANT ALL ON public.fuzz_items TO authenticated, anon")
        conn.execute("GRANT ALL ON SEQUENCE public.fuzz_items_id_seq TO authenticated, anon")
        conn.execute(
            "INSERT INTO public.fuzz_items (label, n, tags, data)"
            " SELECT 'item ' || i, i, ARRAY['t' || i], jsonb_build_object('i', i)"
            " FROM generate_series(1, 20) i"
        )
        conn.execute(f'CREATE TABLE public."{canary}" (v text)')
        conn.execute(f'GRANT ALL ON public."{canary}" TO authenticated, anon')
        conn.execute(f"INSERT INTO public.\"{canary}\" VALUES ('alive')")
    with httpx.Client(base_url=server.url, timeout=15) as http:
        session = http.post(
            "/auth/v1/token?grant_type=password",
            json={"email": "testuser1@example.com", "password": "password123"},
            headers={"apikey": server.anon_key},
        ).json()
        headers = {"apikey": server.anon_key, "Authorization": f"Bearer {session['access_token']}"}
        yield {"http": http, "headers": headers, "canary": canary}
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM public."{canary}"').fetchone()
        assert row == (1,), "the canary table was emptied"
        conn.execute(f'DROP TABLE public."{canary}"')


def _check(resp: httpx.Response) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    assert resp.status_code in (200, 201, 204, 400, 401, 403, 404, 406, 409, 416), resp.text
    if resp.status_code >= 400:
        body = json.loads(resp.text)
        assert "message" in body and "code" in body, body
        if body["code"] == "42601":  # syntax errors may only come from tsquery values
            assert "tsquery" in body["message"], body


def _canary_alive(env: dict[str, Any]) -> None:
    resp = env["http"].get(f"/rest/v1/{env['canary']}", headers=env["headers"])
    assert resp.status_code == 200 and resp.json() == [{"v": "alive"}], resp.text


@given(
    filters=st.lists(st.tuples(_live_column, _live_filter), max_size=4),
    logic=st.one_of(st.none(), _nasty.map(lambda t: f"({t})")),
    select=st.one_of(st.none(), _nasty),
    order=st.one_of(st.none(), _nasty),
)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_reads_answer_cleanly(
    fuzz_env: dict[str, Any],
    filters: list[tuple[str, str]],
    logic: str | None,
    select: str | None,
    order: str | None,
) -> None:
    params: list[tuple[str, str]] = list(filters)
    if logic is not None:
        params.append(("or", logic))
    if select is not None:
        params.append(("select", select))
    if order is not None:
        params.append(("order", order))
    _check(fuzz_env["http"].get("/rest/v1/fuzz_items", params=params, headers=fuzz_env["headers"]))


@given(
    filters=st.lists(st.tuples(_live_column, _live_filter), min_size=1, max_size=3),
    body=st.dictionaries(_column, st.one_of(_nasty, st.integers(), st.none(),
                                            st.lists(_nasty, max_size=3)), max_size=4),
)  # fmt: skip
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_writes_and_rpc_answer_cleanly(
    fuzz_env: dict[str, Any], filters: list[tuple[str, str]], body: dict[str, Any]
) -> None:
    http, headers = fuzz_env["http"], fuzz_env["headers"]
    # Only ever rows whose label is the fuzz marker: the seeded rows stay as they are.
    scoped = [*filters, ("label", "eq.fuzz-never-matches")]
    _check(http.patch("/rest/v1/fuzz_items", params=scoped, json=body, headers=headers))
    _check(http.delete("/rest/v1/fuzz_items", params=scoped, headers=headers))
    _check(http.post("/rest/v1/fuzz_items", json=body,
                     headers={**headers, "Prefer": "return=representation"}))  # fmt: skip
    _check(http.post("/rest/v1/rpc/search_messages", json=body, headers=headers))
    _check(http.get("/rest/v1/rpc/search_messages", params=filters, headers=headers))
    _canary_alive(fuzz_env)


def test_classic_injections_are_inert(fuzz_env: dict[str, Any]) -> None:
    http, headers = fuzz_env["http"], fuzz_env["headers"]
    canary = fuzz_env["canary"]
    attempts = [
        ("label", f"eq.x'; DROP TABLE {canary}; --"),
        ("label", f"in.(a,b'); DELETE FROM {canary}; --)"),
        (f'label" = label; DROP TABLE {canary}; --', "eq.1"),
        ("or", f"(label.eq.a,n.eq.1); DROP TABLE {canary})"),
        ("select", f'label,"n"; DROP TABLE {canary}'),
        ("order", f"label; DROP TABLE {canary}"),
        ("label", "like.*'||pg_sleep(5)||'*"),
        ("n", "eq.1 OR 1=1"),
    ]
    for key, value in attempts:
        resp = http.get("/rest/v1/fuzz_items", params=[(key, value)], headers=headers)
        _check(resp)
        if resp.status_code == 200:
            assert len(resp.json()) <= 1, (key, value, resp.text)
    _canary_alive(fuzz_env)


# ------------------------------------------------------------------ through embed syntax
_CHILD = Relation(
    "public",
    "fuzz_children",
    "r",
    {n: Column(n, t, i) for i, (n, t) in enumerate(
        [("id", "integer"), ("item_id", "integer"), ("note", "text"), ("meta", "jsonb")], 1)},
    ("id",),
)  # fmt: skip
_CATALOG = Catalog(
    {("public", "fuzz_items"): _REL, ("public", "fuzz_children"): _CHILD},
    {},
    [ForeignKey("fuzz_children_item_id_fkey", "fuzz_children", ("item_id",), "fuzz_items",
                ("id",))],
)  # fmt: skip
_EMBED_SELECTS = [
    "id,fuzz_children(note,meta->>k)",
    "id,c:fuzz_children!inner(id)",
    "id,fuzz_children!item_id!inner()",
]
_OUR_ALIAS = re.compile(r"_[tep][0-9]+|_s")


@given(
    select=st.sampled_from(_EMBED_SELECTS),
    path=st.sampled_from(["fuzz_children", "c"]),
    column=st.one_of(st.sampled_from(["note", "meta->>k", "meta->k->0"]), _nasty),
    value=_filter_value,
    order=_nasty,
    marker=_nasty,
)
@settings(max_examples=300, deadline=None)
def test_embedded_syntax_carries_no_request_text(
    select: str, path: str, column: str, value: str, order: str, marker: str
) -> None:
    try:
        level = readplan.Level(
            [parse.parse_filter_param(column, value + marker)],
            parse.parse_order(f"{order or 'id'},meta->{marker or 'x'}"),
            3,
        )
        items = parse.parse_select(select)
        null_test = parse.parse_filter_param(path, "not.is.null")
        statement, params = query.read_sql(
            _REL, items, [null_test], [], 10, 0, _CATALOG, {(path,): level}
        )
        count, _ = query.count_sql(_REL, [null_test], items, _CATALOG, {(path,): level})
    except ApiError as exc:
        assert 400 <= exc.status < 500
        return
    for text in (statement.as_string(None), count.as_string(None)):
        for ident in _quoted_identifiers(text):
            allowed = {*_REL.columns, *_CHILD.columns, "public", "fuzz_items", "fuzz_children",
                       "c", "k"}  # fmt: skip
            assert ident in allowed or _OUR_ALIAS.fullmatch(ident), ident
        if len(marker) > 3 and marker.strip() and marker not in _COLUMNS:
            assert marker not in text.replace('"', "")
    assert 3 in params and 10 in params


def test_injections_through_embed_syntax_are_inert(fuzz_env: dict[str, Any]) -> None:
    http, headers, canary = fuzz_env["http"], fuzz_env["headers"], fuzz_env["canary"]
    drop = f"DROP TABLE {canary}"
    select = "id,sender:profiles!sender_id!inner(username),...conversations(type)"
    attempts = [
        ("sender.username", f"eq.x'; {drop}; --"),
        ("sender.or", f"(username.eq.a,username.eq.b); {drop})"),
        (f'sender.username" = username; {drop}; --', "eq.1"),
        (f"sender; {drop}; --.username", "eq.1"),
        ("sender.order", f"username; {drop}"),
        ("sender.limit", f"1; {drop}"),
        ("sender", f"is.null; {drop}"),
        (f"sender'; {drop}; --", "not.is.null"),
        ("order", f"sender(username; {drop}).desc"),
        (f"metadata->>a'; {drop}; --", "eq.1"),
        (f"sender.username->>x'); {drop}; --", "eq.1"),
        ("select", f"id,metadata->>x'); {drop}; --"),
        ("select", f'id,...profiles!sender_id("username; {drop}")'),
        ("select", f"id,profiles!sender_id!{drop}(username)"),
    ]
    for key, value in attempts:
        params = {"select": select, key: value} if key != "select" else {key: value}
        resp = http.get("/rest/v1/messages", params=params, headers=headers)
        _check(resp)
        if resp.status_code == 200:
            assert resp.json() == [] or key != "sender.username", (key, value, resp.text)
    _canary_alive(fuzz_env)
