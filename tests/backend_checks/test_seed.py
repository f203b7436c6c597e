"""Seeding the shared embedded database when several runs start on it at once."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
import pytest

from backend_checks import check
from backend_checks.datagen import DatagenParams
from backend_checks.seed import ensure_data, ensure_schema, seed_if_empty
from devicelab.scenarios.fixture import RunFixture, prepare
from tests.together import at_once


def test_two_runs_starting_on_one_empty_database_seed_it_once(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two `devicelab run`s (or xdist workers) found the database empty together and both
    # seeded: the second replaced the tables under the first, whose run conversation
    # vanished and whose Realtime filters were refused.
    monkeypatch.setattr(check, "DEFAULT_SEED_MESSAGES", 5_000)
    fixtures: list[RunFixture] = []
    errors = at_once(lambda: fixtures.append(prepare(empty_db, say=lambda _: None)), 2)
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


def test_a_seeded_database_owes_autovacuum_nothing(empty_db: str) -> None:
    # Seeded tables counted their inserts only after the generator's ANALYZE: autovacuum
    # then vacuumed and analyzed them a minute into the run that measured them.
    params = DatagenParams(messages=5_000, users=50, conversations=200, seed=4)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert seed_if_empty(conn, params) is not None
    time.sleep(1.2)  # the generator's sessions report their counts within a second
    with psycopg.connect(empty_db, autocommit=True) as conn:
        owed = conn.execute(
            """SELECT relname, n_ins_since_vacuum, n_mod_since_analyze
               FROM pg_stat_user_tables
               WHERE relname IN ('messages', 'conversations', 'message_read_receipts')
                 AND (n_ins_since_vacuum > 0 OR n_mod_since_analyze > 0)"""
        ).fetchall()
        # Every page holding a message is in the visibility map: index-only scans skip
        # the heap. Not relallvisible >= relpages: the two connections loading messages
        # together extend the table by several pages at a time, and the all-zero pages
        # neither used are never marked all-visible (PostgreSQL leaves new pages out).
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
        unseen = conn.execute(
            """SELECT count(*) FROM pg_visibility_map('public.messages') v
               WHERE NOT v.all_visible AND v.blkno IN
                 (SELECT DISTINCT (ctid::text::point)[0]::bigint FROM public.messages)"""
        ).fetchone()
        pages = conn.execute(
            "SELECT count(DISTINCT (ctid::text::point)[0]) FROM public.messages"
        ).fetchone()
    assert owed == []
    assert pages is not None and pages[0] > 100  # the 5,000 messages fill many pages
    assert unseen == (0,)


#: What an older devicelab's schema.sql put back: its own conversation_list (here the
#: unread badge computed nowhere), with the columns of today's.
_OLDER_VIEW = (
    "CREATE OR REPLACE VIEW public.conversation_list WITH (security_invoker = true)"
    " AS SELECT c.id, c.type, c.name, c.participants, c.created_at,"
    " c.last_message_at, NULL::uuid AS last_message_id, NULL::text AS"
    " last_message_content, NULL::text AS last_message_type, NULL::uuid AS"
    " last_message_sender_id, NULL::timestamptz AS last_message_created_at,"
    " 0::bigint AS unread_count FROM public.conversations c"
)


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
        conn.execute(_OLDER_VIEW)
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


def test_todays_schema_comes_back_after_an_older_devicelab_reinstalled_its_own(
    empty_db: str,
) -> None:
    # An older devicelab's serve or run re-installs its schema.sql and leaves the digest
    # of today's in devicelab_meta (it knows no digest): the upgrade back measured the
    # old view and functions, silently.
    params = DatagenParams(messages=2_000, users=50, conversations=100, seed=5)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert seed_if_empty(conn, params) is not None
        ensure_schema(conn)  # records what today's schema looks like in the catalog
        assert ensure_schema(conn) is False
        conn.execute(_OLDER_VIEW)  # the digest stays today's
        assert "recent_unread_count" not in _view_text(conn)
        assert ensure_schema(conn) is True
        assert "recent_unread_count" in _view_text(conn)
        assert ensure_schema(conn) is False  # once
        # A session of another search_path reads the same catalog: nothing to redo.
        conn.execute("SET search_path = auth, public, extensions")
        assert ensure_schema(conn) is False
        conn.execute("RESET search_path")
        # An older function, too: any of schema.sql's counts.
        conn.execute(
            "CREATE OR REPLACE FUNCTION public.recent_unread_count(p_conversation_id uuid)"
            " RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT 0::bigint $$"
        )
        assert ensure_schema(conn) is True
        # auth.uid(), auth.role(), auth.jwt() are the platform's on Supabase (schema.sql
        # makes them only where missing): a change of theirs is none of ours.
        conn.execute(
            "CREATE OR REPLACE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE"
            " AS $$ SELECT 'authenticated' $$"
        )
        assert ensure_schema(conn) is False
        row = conn.execute("SELECT count(*) FROM public.messages").fetchone()
    assert row == (2_000,)  # the data set is kept


def test_a_given_database_with_another_devicelabs_schema_is_checked_as_it_is_and_said(
    empty_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    # `backend check --dsn` on a database an older devicelab generated measured its old
    # view and functions without a word (results of old and new schemas mixed silently).
    params = DatagenParams(messages=2_000, users=50, conversations=100, seed=6)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert seed_if_empty(conn, params) is not None
        with caplog.at_level(logging.WARNING, logger="backend_checks.seed"):
            ensure_data(conn, managed=False, allow_writes=False, seed_messages=2_000)
        assert not caplog.records  # today's, as generated
        conn.execute(_OLDER_VIEW)
        with caplog.at_level(logging.WARNING, logger="backend_checks.seed"):
            ensure_data(conn, managed=False, allow_writes=False, seed_messages=2_000)
        assert len(caplog.records) == 1
        said = caplog.records[0].getMessage()
        assert "not this devicelab's" in said and "backend serve --dsn DSN" in said
        # A given database is not ours to change unasked: the old view stays.
        assert "recent_unread_count" not in _view_text(conn)
