"""Seeding the shared embedded database when several runs start on it at once."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from backend_checks import check
from backend_checks.datagen import DatagenParams
from backend_checks.seed import ensure_schema, seed_if_empty
from devicelab.scenarios.fixture import RunFixture, prepare


def test_two_runs_starting_on_one_empty_database_seed_it_once(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two `devicelab run`s (or xdist workers) found the database empty together and both
    # seeded: the second replaced the tables under the first, whose run conversation
    # vanished and whose Realtime filters were refused.
    monkeypatch.setattr(check, "DEFAULT_SEED_MESSAGES", 5_000)
    start = threading.Barrier(2)
    fixtures: list[RunFixture] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            fixtures.append(prepare(empty_db, say=lambda _: None))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(f.seeded for f in fixtures) == [False, True]
    assert fixtures[0].conversation_id == fixtures[1].conversation_id
    with psycopg.connect(empty_db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM public.conversations WHERE id = %s",
            (fixtures[0].conversation_id,),
        ).fetchone()
        marks: Any = conn.execute("SELECT count(*) FROM public.messages").fetchone()
    assert row == (1,)  # the first run's conversation survived the second's start
    assert marks[0] == 5_000


def test_a_database_with_messages_is_not_seeded_again(empty_db: str) -> None:
    params = DatagenParams(messages=2_000, users=50, conversations=100, seed=3)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert seed_if_empty(conn, params) is not None
        conn.execute("DELETE FROM public.messages WHERE ctid IN"
                     " (SELECT ctid FROM public.messages LIMIT 10)")  # fmt: skip
        assert seed_if_empty(conn, params) is None
        row = conn.execute("SELECT count(*) FROM public.messages").fetchone()
    assert row == (1_990,)  # kept as it was, not regenerated


def _view_text(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_get_viewdef('public.conversation_list')").fetchone()
    assert row is not None
    return str(row[0])


def test_a_cluster_an_older_devicelab_made_gets_todays_schema_once(empty_db: str) -> None:
    # A managed cluster keeps its data across devicelab upgrades; its view and functions
    # stayed those of the version that created it (a run judged the old view's plans).
    params = DatagenParams(messages=2_000, users=50, conversations=100, seed=3)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert seed_if_empty(conn, params) is not None
        assert ensure_schema(conn) is False  # the generator recorded today's schema
        # What an older devicelab left: its own view, and no digest of its schema.
        conn.execute(
            "CREATE OR REPLACE VIEW public.conversation_list WITH (security_invoker = true)"
            " AS SELECT c.id, c.type, c.name, c.participants, c.created_at,"
            " c.last_message_at, NULL::uuid AS last_message_id, NULL::text AS"
            " last_message_content, NULL::text AS last_message_type, NULL::uuid AS"
            " last_message_sender_id, NULL::timestamptz AS last_message_created_at,"
            " 0::bigint AS unread_count FROM public.conversations c"
        )
        conn.execute("DELETE FROM public.devicelab_meta WHERE key = 'schema'")
        assert "recent_unread_count" not in _view_text(conn)
        prepare(empty_db, say=lambda _: None)  # what `devicelab run` does first
        assert "recent_unread_count" in _view_text(conn)
        assert ensure_schema(conn) is False  # once: the next run finds it current
        row = conn.execute("SELECT count(*) FROM public.messages").fetchone()
    assert row == (2_000,)  # the data set is kept


def test_servers_starting_together_install_the_schema_one_at_a_time(empty_db: str) -> None:
    # Four `backend serve`s (or a farm's runs) re-installing the schema at the same moment
    # failed with "tuple concurrently updated" on CREATE OR REPLACE.
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with psycopg.connect(empty_db, autocommit=True) as conn:
                start.wait()
                for _ in range(3):
                    ensure_schema(conn, always=True)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
