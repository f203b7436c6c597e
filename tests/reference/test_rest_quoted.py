"""Columns whose names need double quotes (a space, a dot, a comma) in ``select=``,
``order=`` and filters, as PostgREST reads them (raw HTTP)."""

from __future__ import annotations

import httpx
import psycopg
import pytest


@pytest.fixture(scope="module")
def quoted(scratch_dsn: str) -> str:
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.rest_quoted (id integer PRIMARY KEY,"
            ' "display name" text, "v.2" integer, "a,b" jsonb)'
        )
        conn.execute("GRANT ALL ON public.rest_quoted TO authenticated")
        conn.execute("TRUNCATE public.rest_quoted")
        conn.execute(
            "INSERT INTO public.rest_quoted SELECT i, 'name ' || i, 10 * i,"
            " jsonb_build_object('k', i) FROM generate_series(1, 4) i"
        )
        conn.execute("NOTIFY pgrst, 'reload schema'")
    return "rest_quoted"


def test_quoted_columns_select_order_and_filter(
    http: httpx.Client, h1: dict[str, str], quoted: str
) -> None:
    resp = http.get(
        f"/{quoted}",
        params={
            "select": 'id,"display name",version:"v.2","a,b"->>k',
            "order": '"v.2".desc',
            '"display name"': "neq.name 4",
        },
        headers=h1,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == [
        {"id": 3, "display name": "name 3", "version": 30, "k": "3"},
        {"id": 2, "display name": "name 2", "version": 20, "k": "2"},
        {"id": 1, "display name": "name 1", "version": 10, "k": "1"},
    ]


def test_a_quoted_name_the_table_lacks_is_an_unknown_column(
    http: httpx.Client, h1: dict[str, str], quoted: str
) -> None:
    resp = http.get(f"/{quoted}", params={"select": '"no such"'}, headers=h1)
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "42703"
