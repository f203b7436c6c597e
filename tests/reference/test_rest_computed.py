"""Computed fields (PostgREST's virtual columns): a function of one row of a table,
selected, filtered and ordered by its name as a column, at the top level, in embeds, in
the rows a write returns and in a function's rows; and computed relationships: a
function of one row returning rows of a table, embedded by its name (raw HTTP)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

_SETUP = """
CREATE TABLE IF NOT EXISTS public.rest_teams (id integer PRIMARY KEY, name text, label text);
CREATE TABLE IF NOT EXISTS public.rest_people (
  id integer PRIMARY KEY, first text, last text,
  team_id integer REFERENCES public.rest_teams (id));
CREATE OR REPLACE FUNCTION public.full_name(public.rest_people) RETURNS text
  LANGUAGE sql STABLE AS $$ SELECT $1.first || ' ' || $1.last $$;
CREATE OR REPLACE FUNCTION public.initials(public.rest_people) RETURNS jsonb
  LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('first', left($1.first, 1), 'last', left($1.last, 1)) $$;
CREATE OR REPLACE FUNCTION public.member_count(public.rest_teams) RETURNS bigint
  LANGUAGE sql STABLE AS $$ SELECT count(*) FROM public.rest_people p WHERE p.team_id = $1.id $$;
-- A column of the same name wins over the function.
CREATE OR REPLACE FUNCTION public.label(public.rest_teams) RETURNS text
  LANGUAGE sql STABLE AS $$ SELECT 'from the function' $$;
CREATE OR REPLACE FUNCTION public.rest_people_of(p_team integer)
  RETURNS SETOF public.rest_people LANGUAGE sql STABLE AS $$
  SELECT * FROM public.rest_people WHERE team_id = p_team $$;
CREATE TABLE IF NOT EXISTS public.rest_badges (
  id integer PRIMARY KEY, person_id integer REFERENCES public.rest_people (id),
  label text, hidden boolean NOT NULL DEFAULT false);
-- Computed relationships: one row (ROWS 1, and a function returning no set), many rows
-- (of its own table), and one named as the table its foreign key reaches: it wins.
CREATE OR REPLACE FUNCTION public.team_of(public.rest_people)
  RETURNS SETOF public.rest_teams ROWS 1 LANGUAGE sql STABLE AS $$
  SELECT * FROM public.rest_teams WHERE id = $1.team_id $$;
CREATE OR REPLACE FUNCTION public.biggest_member(public.rest_teams)
  RETURNS public.rest_people LANGUAGE sql STABLE AS $$
  SELECT * FROM public.rest_people WHERE team_id = $1.id ORDER BY length(first) DESC, id
  LIMIT 1 $$;
CREATE OR REPLACE FUNCTION public.teammates(public.rest_people)
  RETURNS SETOF public.rest_people LANGUAGE sql STABLE AS $$
  SELECT * FROM public.rest_people WHERE team_id = $1.team_id AND id <> $1.id $$;
CREATE OR REPLACE FUNCTION public.rest_badges(public.rest_people)
  RETURNS SETOF public.rest_badges LANGUAGE sql STABLE AS $$
  SELECT * FROM public.rest_badges WHERE person_id = $1.id AND NOT hidden $$;
GRANT ALL ON public.rest_teams, public.rest_people, public.rest_badges TO authenticated;
GRANT EXECUTE ON FUNCTION public.full_name(public.rest_people),
  public.initials(public.rest_people), public.member_count(public.rest_teams),
  public.label(public.rest_teams), public.rest_people_of(integer),
  public.team_of(public.rest_people), public.biggest_member(public.rest_teams),
  public.teammates(public.rest_people), public.rest_badges(public.rest_people)
  TO authenticated;
"""


@pytest.fixture
def people(scratch_dsn: str) -> None:
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(_SETUP)
        conn.execute("TRUNCATE public.rest_badges, public.rest_people, public.rest_teams")
        conn.execute(
            "INSERT INTO public.rest_teams VALUES (1, 'red', 'the reds'), (2, 'blue', 'blues')"
        )
        conn.execute(
            "INSERT INTO public.rest_people VALUES (1, 'Ann', 'Lee', 1), (2, 'Bob', 'Ray', 1),"
            " (3, 'Cy', 'Dunn', 2)"
        )
        conn.execute(
            "INSERT INTO public.rest_badges VALUES (1, 1, 'gold', false), (2, 1, 'secret', true),"
            " (3, 2, 'silver', false)"
        )
        conn.execute("NOTIFY pgrst, 'reload schema'")


def _get(http: httpx.Client, h1: dict[str, str], path: str, **params: str) -> Any:
    resp = http.get(path, params=params, headers=h1)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.usefixtures("people")
def test_a_computed_field_is_selected_filtered_and_ordered_as_a_column(
    http: httpx.Client, h1: dict[str, str]
) -> None:
    rows = _get(
        http, h1, "/rest_people",
        select="id,full_name,name:full_name,initials->>last",
        full_name="neq.Bob Ray", order="full_name.desc",
    )  # fmt: skip
    assert rows == [
        {"id": 3, "full_name": "Cy Dunn", "name": "Cy Dunn", "last": "D"},
        {"id": 1, "full_name": "Ann Lee", "name": "Ann Lee", "last": "L"},
    ]
    # Not part of *, as in PostgREST.
    assert _get(http, h1, "/rest_people", select="*", id="eq.1") == [
        {"id": 1, "first": "Ann", "last": "Lee", "team_id": 1}
    ]


@pytest.mark.usefixtures("people")
def test_computed_fields_in_embeds_and_a_column_of_the_same_name_wins(
    http: httpx.Client, h1: dict[str, str]
) -> None:
    rows = _get(
        http, h1, "/rest_teams",
        select="name,label,member_count,rest_people(full_name)",
        **{"rest_people.full_name": "like.*e*", "rest_people.order": "full_name"},
        order="member_count.desc",
    )  # fmt: skip
    assert rows == [
        {"name": "red", "label": "the reds", "member_count": 2,
         "rest_people": [{"full_name": "Ann Lee"}]},
        {"name": "blue", "label": "blues", "member_count": 1, "rest_people": []},
    ]  # fmt: skip
    # Across a to-one embed, and a function's rows (SETOF a table) have its fields.
    assert _get(
        http, h1, "/rpc/rest_people_of", p_team="1", select="full_name,rest_teams(member_count)",
        order="full_name.desc",
    ) == [
        {"full_name": "Bob Ray", "rest_teams": {"member_count": 2}},
        {"full_name": "Ann Lee", "rest_teams": {"member_count": 2}},
    ]  # fmt: skip


@pytest.mark.usefixtures("people")
def test_writes_filter_on_and_return_computed_fields(
    http: httpx.Client, h1: dict[str, str]
) -> None:
    back = {**h1, "Prefer": "return=representation"}
    resp = http.patch(
        "/rest_people", params={"full_name": "eq.Ann Lee", "select": "id,full_name"},
        json={"last": "Hart"}, headers=back,
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.json() == [{"id": 1, "full_name": "Ann Hart"}]
    resp = http.post(
        "/rest_people", params={"select": "full_name"},
        json={"id": 4, "first": "Di", "last": "Moe", "team_id": 2}, headers=back,
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    assert resp.json() == [{"full_name": "Di Moe"}]
    resp = http.delete(
        "/rest_people", params={"full_name": "eq.Cy Dunn", "select": "id"}, headers=back
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == [{"id": 3}]
    names = _get(http, h1, "/rest_people", select="full_name", order="id")
    assert names == [{"full_name": n} for n in ("Ann Hart", "Bob Ray", "Di Moe")]


@pytest.mark.usefixtures("people")
def test_a_name_that_is_neither_column_nor_computed_field_is_unknown(
    http: httpx.Client, h1: dict[str, str]
) -> None:
    for params in ({"select": "nickname"}, {"nickname": "eq.x"}, {"order": "nickname"}):
        resp = http.get("/rest_people", params=params, headers=h1)
        assert resp.status_code == 400, (params, resp.text)
        assert resp.json()["code"] == "42703"


@pytest.mark.usefixtures("people")
def test_computed_relationships_embed_one_row_or_many_with_filters_and_order(
    http: httpx.Client, h1: dict[str, str]
) -> None:
    rows = _get(
        http, h1, "/rest_people",
        select="first,team_of(name,biggest_member(first)),teammates(first,full_name)",
        order="id",
    )  # fmt: skip
    assert rows == [
        {"first": "Ann", "team_of": {"name": "red", "biggest_member": {"first": "Ann"}},
         "teammates": [{"first": "Bob", "full_name": "Bob Ray"}]},
        {"first": "Bob", "team_of": {"name": "red", "biggest_member": {"first": "Ann"}},
         "teammates": [{"first": "Ann", "full_name": "Ann Lee"}]},
        {"first": "Cy", "team_of": {"name": "blue", "biggest_member": {"first": "Cy"}},
         "teammates": []},
    ]  # fmt: skip
    # Embedded filters, !inner and a related order on the one-row relationship.
    rows = _get(
        http, h1, "/rest_people",
        select="first,team_of!inner(name)", **{"team_of.name": "eq.red"},
        order="team_of(name).desc,first.desc",
    )  # fmt: skip
    assert rows == [{"first": "Bob", "team_of": {"name": "red"}},
                    {"first": "Ann", "team_of": {"name": "red"}}]  # fmt: skip


@pytest.mark.usefixtures("people")
def test_a_computed_relationship_overrides_the_foreign_key_of_its_name(
    http: httpx.Client, h1: dict[str, str]
) -> None:
    # The foreign key would give Ann both badges; the function hides the hidden one.
    rows = _get(http, h1, "/rest_people", select="first,rest_badges(label)", order="id")
    assert rows == [
        {"first": "Ann", "rest_badges": [{"label": "gold"}]},
        {"first": "Bob", "rest_badges": [{"label": "silver"}]},
        {"first": "Cy", "rest_badges": []},
    ]
    # The other way round (badges to people) is still the foreign key's.
    rows = _get(http, h1, "/rest_badges", select="label,rest_people(first)", order="id")
    assert [r["rest_people"] for r in rows] == [{"first": "Ann"}] * 2 + [{"first": "Bob"}]
