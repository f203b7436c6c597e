"""A managed cluster an older devicelab started again (a downgrade, then the upgrade back)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from backend_checks.datagen import DatagenParams
from backend_checks.seed import ensure_data, ensure_schema, seed_if_empty

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
