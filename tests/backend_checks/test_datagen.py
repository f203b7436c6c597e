"""The data generator against real PostgreSQL: refusals, determinism, skew, atomicity
(its parallel path: test_datagen_parallel.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import psycopg
import pytest

from backend_checks import datagen
from backend_checks.datagen import DatagenParams, foreign_data, generate
from devicelab.errors import BadInput, UnsafeActionRefused
from tests.backend_checks.datagen_state import TINY, fingerprint, has_staging


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


def test_cli_creates_a_missing_database_only_with_allow_writes(
    make_db: Callable[[], str], list_tables: Callable[[str], list[str]]
) -> None:
    dsn = make_db()  # a name of ours (dropped at the end), the database itself dropped now
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    admin_dsn = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}"')  # type: ignore[arg-type]

    def datagen(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "devicelab", "backend", "datagen", "--dsn", dsn]
        argv += ["--messages", "1000", "--users", "20", "--conversations", "50", *extra]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    def exists() -> bool:
        with psycopg.connect(admin_dsn) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return found.fetchone() is not None

    refused = datagen()
    assert refused.returncode == 2 and not exists()
    made = datagen("--allow-writes")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"created database {name}\n")
    assert "public.messages" in list_tables(dsn)
    again = datagen("--allow-writes")
    assert again.returncode == 0 and "created database" not in again.stdout


def test_the_created_database_is_said_at_once_and_its_drop_after_a_failure(
    make_db: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line "created database NAME" came only after the whole generation: a run
    stopped later never named the database it had made (and dropped)."""
    from devicelab.errors import BackendUnavailable

    dsn = make_db()
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    admin_dsn = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}"')  # type: ignore[arg-type]
    said: list[str] = []

    def lost(*_args: object, **_kwargs: object) -> None:
        assert said == [f"created database {name}"], "not said before the work"
        raise BackendUnavailable("the server went away", hint="start it again")

    monkeypatch.setattr(datagen, "generate", lost)
    params = DatagenParams(messages=1000, users=20, conversations=50)
    with pytest.raises(BackendUnavailable):
        datagen.run_datagen(dsn, params, allow_writes=True, say=said.append)
    assert said == [f"created database {name}",
                    f"dropped database {name} again: the run did not finish"]  # fmt: skip
    with psycopg.connect(admin_dsn) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        assert found.fetchone() is None


def test_cli_shapes_the_read_receipts_and_the_chats(make_db: Callable[[], str]) -> None:
    dsn = make_db()

    def datagen(*extra: str) -> dict[str, int]:
        argv = [sys.executable, "-m", "devicelab", "backend", "datagen", "--dsn", dsn]
        argv += ["--messages", "500", "--users", "30", "--conversations", "40", *extra]
        argv += ["--allow-writes", "--force"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                """SELECT (SELECT count(*) FROM message_read_receipts),
                          (SELECT sum(cardinality(c.participants) - 1) FROM messages m
                           JOIN conversations c ON c.id = m.conversation_id),
                          (SELECT count(*) FROM conversations WHERE type = 'group'),
                          (SELECT max(n) FROM (SELECT count(*) AS n FROM messages
                                               GROUP BY conversation_id) s),
                          (SELECT extract(day FROM max(created_at) - min(created_at))::int
                           FROM messages)"""
            ).fetchone()
        assert row is not None
        return dict(zip(("receipts", "readers", "groups", "biggest", "days"), row, strict=True))

    all_read = datagen("--unread", "0")
    assert all_read["receipts"] == all_read["readers"] > 0
    none_read = datagen("--unread", "100000")
    assert none_read["receipts"] == 0
    shaped = datagen("--group-fraction", "1", "--skew", "1", "--days", "3")
    assert shaped["groups"] == 40
    assert shaped["biggest"] < all_read["biggest"], "skew 1 spreads the messages evenly"
    assert shaped["days"] <= 3 < all_read["days"]
    argv = [sys.executable, "-m", "devicelab", "backend", "datagen", "--dsn", dsn]
    bad = subprocess.run(
        [*argv, "--messages", "10", "--skew", "0.5", "--allow-writes"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "--skew" in bad.stderr


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "serial"])
def test_a_new_run_leaves_no_dead_users_behind(make_db: Callable[[], str], parallel: bool) -> None:
    # The users of the run before are deleted (auth.users may hold others' users); ten
    # runs of 1,000 users left 90 % of auth.users dead and failed the check's bloat.
    dsn = make_db()
    for _ in range(2):
        with psycopg.connect(dsn) as conn:
            report = generate(conn, TINY, allow_writes=True, parallel=parallel)
            assert "vacuum" in report.phases
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        dead = conn.execute(
            "SELECT relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables"
            " WHERE relid IN ('auth.users'::regclass, 'public.devicelab_meta'::regclass)"
            " ORDER BY 1"
        ).fetchall()
    # devicelab_meta: the data set's mark, the schema's digest and its catalog's.
    assert dead == [("devicelab_meta", 3, 0), ("users", TINY.users, 0)]


def test_a_database_created_for_a_run_that_fails_is_dropped(
    make_db: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = make_db()
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    admin_dsn = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}"')  # type: ignore[arg-type]

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the generator failed half-way")

    monkeypatch.setattr(datagen, "generate", broken)
    with pytest.raises(RuntimeError, match="half-way"):
        datagen.run_datagen(dsn, TINY, allow_writes=True)
    with psycopg.connect(admin_dsn) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        assert found.fetchone() is None


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


def test_each_conversation_is_ordered_by_its_newest_message(healthy_db: str) -> None:
    """last_message_at is drawn, not read from the messages (the two-connection path
    inserts the conversations while the messages are still loading): it must be their
    newest created_at all the same, and a chat without messages has none."""
    with psycopg.connect(healthy_db) as conn:
        wrong = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE m.newest IS NULL)"
            " FROM conversations c LEFT JOIN (SELECT conversation_id, max(created_at) AS newest"
            " FROM messages GROUP BY conversation_id) m ON m.conversation_id = c.id"
            " WHERE c.last_message_at IS DISTINCT FROM m.newest"
            " OR c.updated_at IS DISTINCT FROM coalesce(m.newest, c.created_at)"
        ).fetchone()
        empty = conn.execute(
            "SELECT count(*) FROM conversations c WHERE NOT EXISTS"
            " (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)"
        ).fetchone()
    assert wrong == (0, 0)
    assert empty and empty[0] > 0, "the skew leaves some chats empty: the NULL case is tried"


def test_same_seed_same_data_other_seed_other_data(make_db: Callable[[], str]) -> None:
    a, b, c = make_db(), make_db(), make_db()
    for dsn, params in ((a, TINY), (b, TINY), (c, TINY.model_copy(update={"seed": 4}))):
        with psycopg.connect(dsn) as conn:
            generate(conn, params, allow_writes=True)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c)


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


def test_a_running_reference_servers_listeners_are_not_foreign(empty_db: str) -> None:
    from backend_checks.reference.realtime_capture import _install_sql

    with psycopg.connect(empty_db) as conn:
        generate(conn, TINY, allow_writes=True)
        # What a `backend serve` on this database holds while it runs: its change capture
        # installed and its LISTEN backend registered.
        conn.execute(_install_sql())
        conn.execute("INSERT INTO devicelab_realtime.listeners (pid) VALUES (pg_backend_pid())")
        conn.commit()
        assert foreign_data(conn) == []
        report = generate(conn, TINY.model_copy(update={"messages": 1_000}), allow_writes=True)
        assert report.counts["messages"] == 1_000


#: Supabase's guide to user data: each new auth.users row gets its profile from a trigger.
_HANDLE_NEW_USER = """
CREATE FUNCTION public.handle_new_user() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = '' AS $$
BEGIN
  INSERT INTO public.profiles (id, email, username)
  VALUES (new.id, new.email, split_part(new.email, '@', 1));
  RETURN new;
END $$;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
FOR EACH ROW EXECUTE FUNCTION public.handle_new_user();
"""


def test_a_trigger_making_profiles_on_auth_users_gives_way_to_the_generated_ones(
    empty_db: str,
) -> None:
    with psycopg.connect(empty_db) as conn:
        generate(conn, TINY, allow_writes=True)
        conn.execute(_HANDLE_NEW_USER)  # type: ignore[arg-type]
        conn.commit()
        # Without care, the trigger's profile of each user collides with the generated one.
        for seed in (4, 5):
            report = generate(conn, TINY.model_copy(update={"seed": seed}), allow_writes=True)
            assert report.counts["profiles"] == TINY.users
        row = conn.execute(
            """SELECT count(*) FILTER (WHERE full_name LIKE 'Test User %'), count(*)
               FROM public.profiles"""
        ).fetchone()
        assert row == (TINY.users, TINY.users)  # ours, not the trigger's (no full_name)
        enabled = conn.execute(
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'on_auth_user_created'"
        ).fetchone()
        assert enabled == ("O",)  # left as it was


def test_failure_leaves_nothing_half_written(
    empty_db: str, list_tables: Callable[[str], list[str]]
) -> None:
    # A pre-existing auth.users without the columns we fill: the load fails mid-way, on
    # a database that does not fit (class 42: bad input, exit 2).
    with psycopg.connect(empty_db) as conn:
        conn.execute("CREATE SCHEMA auth")
        conn.execute("CREATE TABLE auth.users (id uuid PRIMARY KEY, email text)")
        conn.commit()
        with pytest.raises(BadInput) as caught:
            generate(conn, TINY, allow_writes=True)
        assert "rolled back" in caught.value.message
        assert "another shape" in (caught.value.hint or "")
    assert list_tables(empty_db) == ["auth.users"]
    assert not has_staging(empty_db)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT count(*) FROM auth.users").fetchone() == (0,)


def test_schema_installs_twice(empty_db: str, list_tables: Callable[[str], list[str]]) -> None:
    from backend_checks.datagen import install_schema

    for _ in range(2):
        with psycopg.connect(empty_db) as conn:
            install_schema(conn)
    assert "public.messages" in list_tables(empty_db)
