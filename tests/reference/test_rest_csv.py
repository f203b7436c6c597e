"""``Accept: text/csv`` on reads (supabase-js ``.csv()``), written as PostgREST writes it:
a header of the row's keys, then each row's text form without its parentheses (raw HTTP)."""

from __future__ import annotations

import httpx
import psycopg
import pytest


@pytest.fixture(scope="module")
def csv_table(scratch_dsn: str) -> str:
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.rest_csv"
            " (id integer PRIMARY KEY, label text, note text, data jsonb)"
        )
        conn.execute("GRANT ALL ON public.rest_csv TO authenticated")
        conn.execute("TRUNCATE public.rest_csv")
        conn.execute(
            "INSERT INTO public.rest_csv VALUES (1, 'plain', NULL, '{\"a\": 1}'),"
            " (2, 'with, comma', 'say \"hi\"', NULL)"
        )
        conn.execute("NOTIFY pgrst, 'reload schema'")
    return "/rest_csv"


def test_rows_come_back_as_csv_with_a_header(
    http: httpx.Client, h1: dict[str, str], csv_table: str
) -> None:
    headers = {**h1, "Accept": "text/csv"}
    resp = http.get(csv_table, params={"select": "id,label,note,data", "order": "id"},
                    headers=headers)  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert resp.text == ('id,label,note,data\n1,plain,,"{""a"": 1}"\n2,"with, comma","say ""hi""",')
    # Renamed columns name the header; no row: an empty header and line.
    resp = http.get(csv_table, params={"select": "n:id", "id": "gt.1"}, headers=headers)
    assert resp.text == "n\n2"
    resp = http.get(csv_table, params={"id": "gt.9"}, headers=headers)
    assert resp.status_code == 200 and resp.text == "\n"


def test_csv_only_where_it_is_served_and_json_stays_the_default(
    http: httpx.Client, h1: dict[str, str], csv_table: str
) -> None:
    # JSON first in Accept wins; a write asking only for CSV is refused, as before.
    both = http.get(csv_table, params={"select": "id", "order": "id"},
                    headers={**h1, "Accept": "application/json, text/csv"})  # fmt: skip
    assert both.json() == [{"id": 1}, {"id": 2}]
    resp = http.post(csv_table, json={"id": 3}, headers={**h1, "Accept": "text/csv"})
    assert resp.status_code == 406 and resp.json()["code"] == "PGRST107"
