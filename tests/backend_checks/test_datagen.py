"""The data generator against real PostgreSQL: refusals, determinism, skew, atomicity,
the parallel path (same rows and schema as the serial one, staging never left behind) and
its fallbacks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backend_checks import datagen, datagen_parallel
from backend_checks.datagen import STAGE_SCHEMA, DatagenParams, LoadSql, foreign_data, generate
from backend_checks.datagen_tasks import Task
from devicelab.errors import BackendUnavailable, ToolMissing, UnsafeActionRefused

TINY = DatagenParams(messages=3_000, users=50, conversations=200, seed=3)


def _fingerprint(dsn: str) -> tuple[object, ...]:
    """A digest of every generated row (bcrypt hashes aside: their salts are random)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """SELECT md5(string_agg(id::text || conversation_id || sender_id || content
                                     || type || coalesce(media_url, '') || created_at
                                     || search_vector::text, ',' ORDER BY id)),
                      (SELECT md5(string_agg(message_id::text || user_id || read_at, ','
                                             ORDER BY message_id, user_id))
                       FROM message_read_receipts),
                      (SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM conversations c),
                      (SELECT md5(string_agg(p::text, ',' ORDER BY id)) FROM profiles p),
                      (SELECT md5(string_agg(id::text || email, ',' ORDER BY id))
                       FROM auth.users)
               FROM messages"""
        ).fetchone()
    assert row is not None
    return tuple(row)


#: Everything the schema and the generator leave in the catalog: constraints (validated or
#: not), indexes, triggers, policies, relations with owner/ACL/RLS, functions, statistics of
#: the generated tables (autovacuum may analyze devicelab_meta, or not).
_CATALOG = """
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' '
       || pg_get_constraintdef(oid) || ' ' || convalidated
FROM pg_constraint WHERE connamespace IN ('public'::regnamespace, 'auth'::regnamespace)
UNION ALL
SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
WHERE c.relnamespace IN ('public'::regnamespace, 'auth'::regnamespace)
UNION ALL
SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname || ' ' || tgenabled::text
FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'policy ' || polrelid::regclass || ' ' || polname FROM pg_policy
UNION ALL
SELECT 'relation ' || oid::regclass || ' ' || relkind::text || relpersistence::text || ' '
       || relrowsecurity || ' ' || coalesce(relacl::text, '') || ' ' || relowner::regrole
FROM pg_class WHERE relnamespace IN ('public'::regnamespace, 'auth'::regnamespace)
  AND relkind IN ('r', 'v', 'i')
UNION ALL
SELECT 'schema ' || nspname FROM pg_namespace
-- pg_temp_N / pg_toast_temp_N belong to whichever backend slot ran a temp table: not schema
WHERE nspname !~ '^pg_(toast_)?temp_[0-9]+$'
UNION ALL
SELECT 'function ' || oid::regprocedure FROM pg_proc
WHERE pronamespace IN ('public'::regnamespace, 'auth'::regnamespace)
UNION ALL
SELECT 'statistics ' || schemaname || '.' || tablename || '.' || attname FROM pg_stats
WHERE schemaname || '.' || tablename IN ('auth.users', 'public.profiles', 'public.conversations',
                                          'public.messages', 'public.message_read_receipts')
ORDER BY 1"""


def _catalog(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(_CATALOG)]


def _has_staging(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (STAGE_SCHEMA,)
        ).fetchone()
    return row != (0,)


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
    # A pre-existing auth.users without the columns we fill: the load fails mid-way.
    with psycopg.connect(empty_db) as conn:
        conn.execute("CREATE SCHEMA auth")
        conn.execute("CREATE TABLE auth.users (id uuid PRIMARY KEY, email text)")
        conn.commit()
        with pytest.raises(BackendUnavailable) as caught:
            generate(conn, TINY, allow_writes=True)
        assert "rolled back" in caught.value.message
    assert list_tables(empty_db) == ["auth.users"]
    assert not _has_staging(empty_db)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT count(*) FROM auth.users").fetchone() == (0,)


def test_schema_installs_twice(empty_db: str, list_tables: Callable[[str], list[str]]) -> None:
    from backend_checks.datagen import install_schema

    for _ in range(2):
        with psycopg.connect(empty_db) as conn:
            install_schema(conn)
    assert "public.messages" in list_tables(empty_db)


# ---------------------------------------------------------------------- the parallel path
def test_parallel_and_serial_paths_give_the_same_rows_and_schema(
    make_db: Callable[[], str],
) -> None:
    serial, parallel, again = make_db(), make_db(), make_db()
    modes = []
    for dsn, flag in ((serial, False), (parallel, True), (again, True)):
        with psycopg.connect(dsn) as conn:
            modes.append(generate(conn, TINY, allow_writes=True, parallel=flag).mode)
    # A second parallel run over its own data swaps the tables again.
    with psycopg.connect(again) as conn:
        modes.append(generate(conn, TINY, allow_writes=True).mode)
    assert modes == ["serial", "parallel", "parallel", "parallel"]
    assert _fingerprint(serial) == _fingerprint(parallel) == _fingerprint(again)
    catalogs = [_catalog(dsn) for dsn in (serial, parallel, again)]
    assert set(catalogs[0]) ^ set(catalogs[1]) == set()
    assert set(catalogs[1]) ^ set(catalogs[2]) == set()
    assert catalogs[0] == catalogs[1] == catalogs[2]
    assert not _has_staging(parallel) and not _has_staging(again)


def test_parallel_failure_mid_way_keeps_the_old_data_and_no_staging(
    make_db: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = make_db()
    with psycopg.connect(dsn) as conn:
        generate(conn, TINY, allow_writes=True)
    before = _fingerprint(dsn), _catalog(dsn)

    def broken(self: LoadSql) -> tuple[str, dict[str, Any]]:
        return "INSERT INTO devicelab_stage.message_read_receipts SELECT 1 / 0", {}

    monkeypatch.setattr(LoadSql, "receipts", broken)
    with psycopg.connect(dsn) as conn, pytest.raises(BackendUnavailable) as caught:
        generate(conn, TINY.model_copy(update={"seed": 9}), allow_writes=True)
    assert "rolled back" in caught.value.message
    assert (_fingerprint(dsn), _catalog(dsn)) == before
    assert not _has_staging(dsn)


def test_parallel_failure_on_an_empty_database_leaves_nothing(
    empty_db: str, list_tables: Callable[[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: LoadSql) -> tuple[str, dict[str, Any]]:
        return "SELECT 1 / 0", {}

    monkeypatch.setattr(LoadSql, "conversations", broken)
    with psycopg.connect(empty_db) as conn, pytest.raises(BackendUnavailable):
        generate(conn, TINY, allow_writes=True, parallel=True)
    assert list_tables(empty_db) == []
    assert not _has_staging(empty_db)


def test_staging_left_by_a_killed_run_is_not_foreign_and_is_dropped(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn:
        conn.execute(f"CREATE SCHEMA {STAGE_SCHEMA}")
        conn.execute(f"CREATE TABLE {STAGE_SCHEMA}.messages (id int)")
        conn.execute(f"INSERT INTO {STAGE_SCHEMA}.messages VALUES (1)")
        conn.commit()
        assert foreign_data(conn) == []
    for parallel in (False, True):
        with psycopg.connect(empty_db) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGE_SCHEMA}")
            conn.commit()
            generate(conn, TINY, allow_writes=True, parallel=parallel)
        assert not _has_staging(empty_db)


def test_falls_back_to_one_transaction_inside_the_callers_transaction(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn:
        conn.execute("SELECT 1")  # a transaction is open: the parallel path would commit it
        report = generate(conn, TINY, allow_writes=True)
        conn.commit()
    assert report.mode == "serial"
    assert report.counts["messages"] == TINY.messages


def test_falls_back_to_one_transaction_when_the_swap_would_lose_something(
    make_db: Callable[[], str],
) -> None:
    dsn = make_db()
    with psycopg.connect(dsn) as conn:
        generate(conn, TINY, allow_writes=True)
        # Someone else's view on our table: dropping the table would need CASCADE.
        conn.execute("CREATE VIEW public.recent AS SELECT id FROM public.messages")
        # ...and a publication of it (which DROP TABLE would silently forget).
        conn.execute("CREATE PUBLICATION dl_test_pub FOR TABLE public.conversations")
        conn.commit()
        report = generate(conn, TINY.model_copy(update={"seed": 5}), allow_writes=True)
        assert report.mode == "serial"
        conn.execute("DROP VIEW public.recent")
        conn.commit()
        report = generate(conn, TINY, allow_writes=True)
        assert report.mode == "serial", "the publication alone keeps the serial path"
        pub = conn.execute(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'dl_test_pub'"
        ).fetchone()
        assert pub == (1,)
        conn.execute("DROP PUBLICATION dl_test_pub")
        conn.commit()
    assert not _has_staging(dsn)


def test_parallel_path_without_a_second_connection_runs_serial(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datagen_parallel, "_second_connection", lambda conn: None)
    with psycopg.connect(empty_db) as conn:
        report = generate(conn, TINY, allow_writes=True)
    assert report.mode == "serial"
    assert not _has_staging(empty_db)


@pytest.fixture
def managed_dsns() -> Iterator[tuple[str, str]]:
    """A managed cluster in a temporary state dir: (unix socket DSN, TCP DSN with password)."""
    from backend_checks.managed import ManagedPostgres, find_bindir

    try:
        find_bindir()
    except ToolMissing:
        pytest.skip("no PostgreSQL server binaries")
    # Not pytest's tmp_path: as root the postgres user must traverse every parent folder.
    path = Path(tempfile.mkdtemp(prefix="dl-datagen-", dir="/tmp"))
    path.chmod(0o711)
    cluster = ManagedPostgres(path)
    try:
        socket_dsn = cluster.ensure()
        cluster.ensure("dl_tcp")
        yield socket_dsn, cluster.dsn("dl_tcp", tcp=True)
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(path, ignore_errors=True)


def test_parallel_path_on_the_managed_cluster_socket_and_tcp(
    managed_dsns: tuple[str, str],
) -> None:
    # The second connection reuses the first one's parameters, the password included.
    fingerprints = []
    for dsn in managed_dsns:
        with psycopg.connect(dsn) as conn:
            report = generate(conn, TINY, allow_writes=True)
        assert report.mode == "parallel"
        fingerprints.append(_fingerprint(dsn))
        assert not _has_staging(dsn)
    assert fingerprints[0] == fingerprints[1]


def test_staging_ddl_is_the_schemas_four_tables_outside_public() -> None:
    statements, external = datagen_parallel.staging_ddl()
    tables = [s.split()[2] for s in statements if s.startswith("CREATE TABLE")]
    assert tables == [
        f"{STAGE_SCHEMA}.profiles",
        f"{STAGE_SCHEMA}.conversations",
        f"{STAGE_SCHEMA}.messages",
        f"{STAGE_SCHEMA}.message_read_receipts",
    ]
    assert not any("public." in s or "auth." in s for s in statements)
    # The one reference outside public, added at the swap once the users exist.
    assert external == [
        ("profiles", "ADD FOREIGN KEY (id) REFERENCES auth.users (id) ON DELETE CASCADE")
    ]


def test_tasks_that_would_wait_for_each_other_never_run_together() -> None:
    def task(**locks: str) -> Any:
        return Task("t", lambda conn, wait: None, 1.0, locks=locks)

    index, other_index = task(messages="s"), task(messages="s")
    assert not index.conflicts(other_index)  # two CREATE INDEX share the table
    assert index.conflicts(task(messages="a"))  # CREATE INDEX and ANALYZE do not
    assert task(messages="a").conflicts(task(messages="a"))
    assert not task(messages="r", receipts="a").conflicts(task(messages="s"))
    assert task(messages="x").conflicts(task(messages="r"))
    assert not task(receipts="a").conflicts(task(messages="a"))
