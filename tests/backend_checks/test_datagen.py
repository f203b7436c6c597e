"""The data generator against real PostgreSQL: refusals, determinism, skew, atomicity."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import psycopg
import pytest

from backend_checks.datagen import DatagenParams, foreign_data, generate
from devicelab.errors import BackendUnavailable, UnsafeActionRefused

TINY = DatagenParams(messages=3_000, users=50, conversations=200, seed=3)


def _fingerprint(dsn: str) -> tuple[object, ...]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """SELECT md5(string_agg(id::text || conversation_id || sender_id || content
                                     || created_at, ',' ORDER BY id)),
                      (SELECT md5(string_agg(message_id::text || user_id, ',' ORDER BY 1))
                       FROM message_read_receipts)
               FROM messages"""
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_refuses_without_allow_writes_and_creates_nothing(
    empty_db: str, list_tables: Callable[[str], list[str]]
) -> None:
    before = list_tables(empty_db)
    with psycopg.connect(empty_db) as conn, pytest.raises(UnsafeActionRefused) as caught:
        generate(conn, TINY, allow_writes=False)
    assert caught.value.exit_code == 2
    assert list_tables(empty_db) == before == []


def test_cli_refuses_without_allow_writes(
    empty_db: str, list_tables: Callable[[str], list[str]]
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "devicelab",
            "backend",
            "datagen",
            "--dsn",
            empty_db,
            "--messages",
            "1000",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--allow-writes" in proc.stderr
    assert list_tables(empty_db) == []
    with psycopg.connect(empty_db) as conn:
        schemas = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'auth'")
        assert schemas.fetchone() == (0,)


def test_counts_skew_users_and_search_text(healthy_db: str, small_params: DatagenParams) -> None:
    dsn, params = healthy_db, small_params
    with psycopg.connect(dsn) as conn:
        sizes = [
            r[0]
            for r in conn.execute(
                "SELECT count(*) FROM messages GROUP BY conversation_id ORDER BY 1 DESC"
            )
        ]
        assert sum(sizes) == params.messages
        median = sizes[len(sizes) // 2]
        assert sizes[0] > 20 * median, "a few conversations must dominate (Zipf-like)"
        user = conn.execute(
            "SELECT email, encrypted_password = crypt('password123', encrypted_password)"
            " FROM auth.users WHERE email = 'testuser1@example.com'"
        ).fetchone()
        assert user == ("testuser1@example.com", True)
        hits = conn.execute(
            "SELECT count(*) FROM messages"
            " WHERE search_vector @@ websearch_to_tsquery('english', 'test')"
        ).fetchone()
        assert hits and 0 < hits[0] < params.messages // 5
        same = conn.execute(
            "SELECT count(*) FROM messages WHERE search_vector IS DISTINCT FROM"
            " to_tsvector('english', coalesce(content, ''))"
        ).fetchone()
        assert same == (0,), "the pooled tsvector must equal what the trigger computes"
        kinds = dict(conn.execute("SELECT type, count(*) FROM messages GROUP BY type").fetchall())
        assert set(kinds) == {"text", "image", "video"}
        unread = conn.execute(
            "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id,"
            " unnest(c.participants) u WHERE u <> m.sender_id AND NOT EXISTS (SELECT 1 FROM"
            " message_read_receipts r WHERE r.message_id = m.id AND r.user_id = u)"
        ).fetchone()
        receipts = conn.execute("SELECT count(*) FROM message_read_receipts").fetchone()
        assert unread and receipts and 0 < unread[0] < receipts[0]
        indexes = {
            r[0]
            for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'messages'")
        }
        assert {
            "messages_pkey",
            "messages_conversation_created_idx",
            "messages_search_vector_idx",
        } <= indexes
        analyzed = conn.execute(
            "SELECT last_analyze IS NOT NULL OR reltuples > 0 FROM pg_stat_user_tables t"
            " JOIN pg_class c ON c.oid = t.relid WHERE t.relname = 'messages'"
        ).fetchone()
        assert analyzed == (True,)


def test_same_seed_same_data_other_seed_other_data(make_db: Callable[[], str]) -> None:
    a, b, c = make_db(), make_db(), make_db()
    for dsn, params in ((a, TINY), (b, TINY), (c, TINY.model_copy(update={"seed": 4}))):
        with psycopg.connect(dsn) as conn:
            generate(conn, params, allow_writes=True)
    assert _fingerprint(a) == _fingerprint(b)
    assert _fingerprint(a) != _fingerprint(c)


def test_refuses_foreign_rows_unless_forced_and_regenerates_its_own(
    empty_db: str, list_tables: Callable[[str], list[str]]
) -> None:
    with psycopg.connect(empty_db) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        conn.commit()
        assert foreign_data(conn) == ["public.orders"]
        with pytest.raises(UnsafeActionRefused):
            generate(conn, TINY, allow_writes=True)
    assert list_tables(empty_db) == ["public.orders"]
    with psycopg.connect(empty_db) as conn:
        generate(conn, TINY, allow_writes=True, force=True)
        # Our own rows are not foreign: a second run replaces them without --force...
        conn.execute("DROP TABLE orders")
        conn.commit()
        report = generate(conn, TINY.model_copy(update={"messages": 1_000}), allow_writes=True)
        assert report.counts["messages"] == 1_000
        # ...but a row someone else added is.
        conn.execute(
            "INSERT INTO auth.users (id, email) VALUES (gen_random_uuid(), 'alice@example.org')"
        )
        conn.commit()
        with pytest.raises(UnsafeActionRefused):
            generate(conn, TINY, allow_writes=True)


def test_failure_leaves_nothing_half_written(
    empty_db: str, list_tables: Callable[[str], list[str]]
) -> None:
    # A pre-existing auth.users without the columns we fill: the load fails mid-way.
    with psycopg.connect(empty_db) as conn:
        conn.execute("CREATE SCHEMA auth")
        conn.execute("CREATE TABLE auth.users (id uuid PRIMARY KEY, email text)")
        conn.commit()
        with pytest.raises(BackendUnavailable) as caught:
            generate(conn, TINY, allow_writes=True)
        assert "rolled back" in caught.value.message
    assert list_tables(empty_db) == ["auth.users"]
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT count(*) FROM auth.users").fetchone() == (0,)


def test_schema_installs_twice(empty_db: str, list_tables: Callable[[str], list[str]]) -> None:
    from backend_checks.datagen import install_schema

    for _ in range(2):
        with psycopg.connect(empty_db) as conn:
            install_schema(conn)
    assert "public.messages" in list_tables(empty_db)
