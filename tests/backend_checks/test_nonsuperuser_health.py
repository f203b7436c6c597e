"""``backend check`` as roles that are not superusers (an outside tester's findings on
PostgreSQL 15): what they may not do is said, with the fix, never passed off as done.

Roles are cluster-wide: each test makes its own (``dl_t_<hex>``) and drops it. On the
shared server (127.0.0.1:5432) neither auto_explain nor pg_stat_statements is preloaded;
a cluster of our own (the ``load_cluster`` fixture) preloads both.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from backend_checks import server_health
from backend_checks.check import CheckOptions, run_check
from backend_checks.datagen import DatagenParams
from backend_checks.suite import AUTO_EXPLAIN_SETTINGS
from devicelab.models import Check

#: Small enough for a run in seconds; mark_as_read still finds unread messages to mark.
TINY = DatagenParams(messages=2_000, users=50, conversations=100, seed=11)

#: What a read-only role on the tables looks like (the tester's setup): it reads
#: everything, passes RLS, and may become the app role, but owns nothing.
READER = "LOGIN BYPASSRLS IN ROLE pg_read_all_data, authenticated"


def _as(dsn: str, role: str) -> str:
    """``dsn`` with ``role`` as its user."""
    return make_conninfo(dsn, user=role)


@contextlib.contextmanager
def _role(admin_dsn: str, attributes: str) -> Iterator[str]:
    """A new role on ``admin_dsn``'s server (``CREATE ROLE name attributes``); yields its
    name, and drops it (its sessions ended, what it owns in that database dropped)."""
    name = f"dl_t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} " + attributes).format(sql.Identifier(name)))  # type: ignore[arg-type]
    try:
        yield name
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _checks(dsn: str, *only: str) -> dict[str, Check]:
    results = run_check(dsn, CheckOptions(runs=3, only=list(only)))
    return {c.id: c for c in results.checks}


@pytest.fixture(scope="module")
def tiny_db(generate_db: Callable[[DatagenParams], str]) -> str:
    """A generated database owned by postgres (tests here only read it, or roll back)."""
    return generate_db(TINY)


@pytest.fixture(scope="module")
def own_cluster(
    load_cluster: Callable[[str], AbstractContextManager[str]],
) -> Iterator[str]:
    """A cluster of ours preloading pg_stat_statements (track = all) and auto_explain, with
    the extension created; its DSN as postgres (a superuser)."""
    with load_cluster("nonsuper") as dsn:
        yield dsn


# A. VACUUM as a role that does not own the tables.


def test_vacuum_as_a_non_owner_returns_only_what_it_vacuumed(tiny_db: str) -> None:
    tables = ["public.messages", "public.message_read_receipts"]
    with _role(tiny_db, READER) as role, psycopg.connect(_as(tiny_db, role)) as conn:
        # PostgreSQL skips the tables with a WARNING, no error: they were counted as done.
        assert server_health.vacuum(conn, tables) == []
    with psycopg.connect(tiny_db) as conn:
        assert server_health.vacuum(conn, tables) == tables


def test_vacuum_watches_for_postgresql_s_warning_too(
    tiny_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ownership rule changes between versions (PostgreSQL 17's MAINTAIN): should the
    # check up front let a table through, the server's refusal still must not count.
    monkeypatch.setattr(server_health, "_may_vacuum", lambda conn: "true")
    with _role(tiny_db, READER) as role, psycopg.connect(_as(tiny_db, role)) as conn:
        assert server_health.vacuum(conn, ["public.messages"]) == []


def test_a_non_owner_s_check_names_the_tables_it_could_not_vacuum(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    dsn = generate_db(TINY)
    with _role(dsn, READER) as role:
        for run in range(2):  # the tester's repro: twice, dead tuples growing
            bloat = _checks(_as(dsn, role), "mark_as_read")["bloat"]
            dead = {t["table"]: t["dead"] for t in bloat.evidence["tables"]}
            assert dead["public.message_read_receipts"] > 0 or run == 0  # left by run 1
            assert bloat.evidence["vacuumed_after"] == []
            skipped = {t["table"]: t["owner"] for t in bloat.evidence["vacuum_skipped"]}
            assert skipped["public.message_read_receipts"] == "postgres"
            assert role in bloat.evidence["vacuum_skipped_why"]
            assert "not VACUUMed after the suite" in (bloat.reason or "")
            assert "public.message_read_receipts" in (bloat.reason or "")
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'message_read_receipts'"
        ).fetchone()
    assert row == (None,)


def test_an_owner_s_check_has_nothing_to_skip(tiny_db: str) -> None:
    with psycopg.connect(tiny_db) as conn:
        bloat = server_health.bloat(conn, min_table_rows=10_000)
    assert "vacuum_skipped" not in bloat.evidence
    assert "VACUUMed" not in (bloat.reason or "")


# B. pg_stat_statements without pg_read_all_stats.


def _pg_stat_statements_role(dsn: str, role: str) -> Check:
    with psycopg.connect(dsn) as conn:
        for _ in range(6):
            conn.execute("SELECT count(*) FROM public.messages").fetchall()
    with psycopg.connect(_as(dsn, role)) as conn:
        return server_health.slow_queries(conn)


def test_slow_queries_names_the_grant_that_shows_other_roles_statements(
    own_cluster: str,
) -> None:
    with _role(own_cluster, "LOGIN") as role:
        slow = _pg_stat_statements_role(own_cluster, role)
        assert slow.status in ("pass", "fail")  # the timings are there: still judged
        assert any(q["query"] == "<insufficient privilege>" for q in slow.evidence["top"])
        assert f"GRANT pg_read_all_stats TO {role}" in (slow.reason or "")
        assert "Supabase: the postgres role has it" in slow.evidence["hidden_fix"]
        with psycopg.connect(own_cluster, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(role)))
        slow = _pg_stat_statements_role(own_cluster, role)
        assert "GRANT" not in (slow.reason or "")
        assert "hidden_statements" not in slow.evidence


# C. Plans inside functions.


def test_without_auto_explain_or_pg_stat_statements_the_check_says_nothing_was_read(
    tiny_db: str,
) -> None:
    with _role(tiny_db, READER) as role:
        checks = _checks(_as(tiny_db, role), "message_search", "mark_as_read")
    for cid in ("message_search", "mark_as_read"):
        source = checks[cid].evidence["nested_source"]
        assert checks[cid].evidence["nested"] == []
        assert source.startswith("none: auto_explain unavailable"), source
        assert 'access to library "auto_explain" is not allowed' in source
        assert "superuser" in source
        assert "CREATE EXTENSION pg_stat_statements" in source
    seq = checks["seq_scans"]
    assert set(seq.evidence["function_plans_unread"]) == {"message_search", "mark_as_read"}
    assert "not inspected" in (seq.reason or "")


def test_pg_stat_statements_without_pg_read_all_stats_names_the_grant(
    own_cluster: str,
) -> None:
    with _role(own_cluster, READER) as role:
        mark = _checks(_as(own_cluster, role), "mark_as_read")["mark_as_read"]
        source = mark.evidence["nested_source"]
        assert source.startswith("none: auto_explain unavailable"), source
        assert "<insufficient privilege>" in source
        assert f"GRANT pg_read_all_stats TO {role}" in source
        with psycopg.connect(own_cluster, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(role)))
        mark = _checks(_as(own_cluster, role), "mark_as_read")["mark_as_read"]
        assert mark.evidence["nested_source"].startswith("pg_stat_statements (timings")
        assert mark.evidence["nested_stats"]


def test_a_preloaded_auto_explain_with_granted_settings_serves_a_non_superuser(
    own_cluster: str,
) -> None:
    # LOAD is refused to a non-superuser even for a preloaded library: it must be skipped.
    with _role(own_cluster, READER) as role:
        grant = sql.SQL("GRANT SET ON PARAMETER {} TO {}").format(
            sql.SQL(", ").join(sql.Identifier("auto_explain", s) for s in AUTO_EXPLAIN_SETTINGS),
            sql.Identifier(role),
        )
        with psycopg.connect(own_cluster, autocommit=True) as conn:
            conn.execute(grant)
        mark = _checks(_as(own_cluster, role), "mark_as_read")["mark_as_read"]
        assert mark.evidence["nested_source"] == "auto_explain (log_nested_statements)"
        assert mark.evidence["nested"]


# D. A role whose transactions are read-only.


def test_a_read_only_role_skips_the_writes_with_the_reason(tiny_db: str) -> None:
    with _role(tiny_db, READER) as role:
        with psycopg.connect(tiny_db, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
                    sql.Identifier(role)
                )
            )
        checks = _checks(_as(tiny_db, role), "send_message", "mark_as_read")
    for cid in ("send_message", "mark_as_read"):
        check = checks[cid]
        assert check.status == "skip", check.reason
        assert "25006" in (check.reason or "")
        assert "read_only_sql_transaction" in (check.reason or "")
        assert "role that may write" in (check.reason or "")
        assert "rolled back" in (check.reason or "")
