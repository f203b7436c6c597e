"""slow_queries judges the app's statements of the data set there now: devicelab's own
plan statements are left out, a datagen resets the database's pg_stat_statements entries,
and the reason says since when its (cumulative) timings run.

The pg_stat_statements tests use a managed cluster of our own (the shared server at
127.0.0.1:5432 does not preload it); the slow statements are simulated with pg_sleep, in
the forms the query suite sends (a timed statement as the app role, EXPLAIN ANALYZE).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from backend_checks import server_health
from backend_checks.datagen import DatagenParams, generate
from backend_checks.statement_history import reset_database_statements

TINY = DatagenParams(messages=2_000, users=50, conversations=100, seed=5)
#: A statement of the suite's kind that took ~110 ms: the app's text, as the app role.
_SLOW_APP = "SELECT pg_sleep(0.11), * FROM public.profiles LIMIT %s"


@pytest.fixture(scope="module")
def cluster(
    load_cluster: Callable[[str], contextlib.AbstractContextManager[str]],
) -> Iterator[str]:
    """One managed cluster of ours (pg_stat_statements preloaded) with a small data set."""
    with load_cluster("slowhist") as url:
        yield url


def _conn(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def _broken_run(conn: psycopg.Connection[Any]) -> None:
    """What one check on a database missing an index leaves in pg_stat_statements: its
    timed runs as the app role and its EXPLAIN ANALYZE as the owner, each over 100 ms."""
    for _ in range(5):
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute(_SLOW_APP, (1,)).fetchall()  # type: ignore[arg-type]
        with conn.transaction(force_rollback=True):
            conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _SLOW_APP,  # type: ignore[arg-type]
                (1,),
            ).fetchall()


def test_a_datagen_after_a_broken_check_leaves_slow_queries_passing(cluster: str) -> None:
    # The acceptance repro in small: check on a broken database, datagen, check: the
    # broken run's timings failed slow_queries on every later run.
    with _conn(cluster) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        _broken_run(conn)
        before = server_health.slow_queries(conn)
    assert before.status == "fail"
    assert [q["role"] for q in before.evidence["outliers"]] == ["authenticated"]
    assert "timings are cumulative, since " in (before.reason or "")
    assert re.search(r"until SELECT pg_stat_statements_reset\(0, \d+, 0\)", before.reason or "")
    with psycopg.connect(cluster) as conn:
        report = generate(conn, TINY, allow_writes=True, reset_statements=True)
    assert "pg_stat_statements reset" in report.phases
    with _conn(cluster) as conn:
        after = server_health.slow_queries(conn)
    assert after.status == "pass", after.reason
    assert after.evidence["stats_since_by"] == "datagen reset this database's statements"
    since = datetime.fromisoformat
    assert since(after.evidence["stats_since"]) > since(before.evidence["stats_since"])
    assert re.search(
        r"; timings since \d{4}-\d\d-\d\d \d\d:\d\d UTC at the earliest \(datagen reset this",
        after.reason or "",
    ), after.reason


def test_the_plan_suite_s_explain_statements_are_left_out_and_counted(cluster: str) -> None:
    with _conn(cluster) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        for _ in range(5):
            with conn.transaction(force_rollback=True):
                conn.execute("SET LOCAL ROLE authenticated")
                conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _SLOW_APP,  # type: ignore[arg-type]
                    (1,),
                ).fetchall()
            conn.execute("EXPLAIN (FORMAT JSON) SELECT pg_sleep(0.11)").fetchall()
        slow = server_health.slow_queries(conn)
    assert slow.status == "pass", slow.reason
    assert not [q for q in slow.evidence["top"] if "EXPLAIN" in q["query"].upper()]
    # The EXPLAIN as the app role, the statement it explains (toplevel = false, under the
    # EXPLAIN's text), and the estimate-only EXPLAIN (fast: not slow).
    checks = slow.evidence["devicelab_left_out"]["checks"]
    assert checks["slow"] == 2 and checks["statements"] >= 3, checks
    assert slow.evidence["devicelab_slow_statements_left_out"] == 2
    assert "2 statements only devicelab's checks send" in (slow.reason or "")


def test_the_reason_says_since_when_after_a_reset_of_everything(cluster: str) -> None:
    with _conn(cluster) as conn:
        conn.execute("DELETE FROM public.devicelab_meta WHERE key = 'statements_reset'")
        conn.execute("SELECT pg_stat_statements_reset()")
        at = conn.execute("SELECT stats_reset FROM pg_stat_statements_info").fetchone()
        slow = server_health.slow_queries(conn)
    assert at and slow.evidence["stats_since"] == at[0].isoformat()
    assert slow.evidence["stats_since_by"] == "pg_stat_statements_reset"
    label = f"since {at[0]:%Y-%m-%d %H:%M} UTC at the earliest (pg_stat_statements_reset)"
    assert (slow.reason or "").endswith(f"; timings {label}"), slow.reason


def test_a_role_that_may_not_reset_leaves_the_entries_and_raises_nothing(cluster: str) -> None:
    with _conn(cluster) as conn:
        conn.execute("DROP ROLE IF EXISTS f4_reader")
        conn.execute("CREATE ROLE f4_reader LOGIN")
        conn.execute("GRANT pg_read_all_stats TO f4_reader")
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute("SELECT pg_sleep(0.01)")
    try:
        with psycopg.connect(f"{cluster} user=f4_reader", autocommit=True) as conn:
            assert reset_database_statements(conn) is False
            conn.execute("SELECT 1")  # the connection is still usable
        with _conn(cluster) as conn:
            kept = conn.execute(
                "SELECT count(*) FROM pg_stat_statements WHERE query ~ 'pg_sleep'"
            ).fetchone()
        assert kept and kept[0] >= 1
    finally:
        with _conn(cluster) as conn:
            conn.execute("REVOKE pg_read_all_stats FROM f4_reader")
            conn.execute("DROP ROLE f4_reader")


def test_datagen_goes_on_where_pg_stat_statements_is_installed_but_not_loaded(
    empty_db: str,
) -> None:
    # The shared test server does not preload it: the reset fails, the datagen does not.
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    with psycopg.connect(empty_db) as conn:
        report = generate(conn, TINY, allow_writes=True, reset_statements=True)
        assert "pg_stat_statements reset" not in report.phases
        row = conn.execute("SELECT count(*) FROM public.messages").fetchone()
    assert row and row[0] == TINY.messages


def test_datagen_on_a_given_database_keeps_its_statement_history(cluster: str) -> None:
    # A database we were given (a hosted project's) keeps every service's history: only
    # the managed cluster or a database datagen created itself is reset.
    from backend_checks.datagen import run_datagen

    with _conn(cluster) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        _broken_run(conn)
    run_datagen(cluster, TINY, allow_writes=True, force=True)
    with _conn(cluster) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s",
            ("%pg_sleep(%",),
        ).fetchone()
    assert row and row[0] >= 1
