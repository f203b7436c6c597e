"""The data generator's statements stay out of pg_stat_statements where it may say so."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import psycopg

from backend_checks.datagen import DatagenParams, generate

TINY = DatagenParams(messages=2_000, users=50, conversations=100, seed=4)


def test_datagen_runs_leave_no_statements_to_be_called_slow(
    load_cluster: Callable[[str], contextlib.AbstractContextManager[str]],
) -> None:
    # Five datagens on one managed cluster made their CREATE TABLE AS and ANALYZE
    # "statements called >= 5 times, mean > 100 ms": slow_queries failed the next check.
    # (Its bookkeeping outside the load, a DROP SCHEMA of ~1 ms, may still be recorded.)
    with load_cluster("dgstat") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
        for parallel in (True, False):
            with psycopg.connect(url) as conn:
                generate(conn, TINY, allow_writes=True, parallel=parallel)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT count(*) FROM public.messages")  # recorded: not datagen's
            rows = conn.execute(
                """SELECT query FROM pg_stat_statements
                   WHERE query ~* '_dl_|INSERT INTO|ANALYZE|CREATE (UNLOGGED )?TABLE|CREATE INDEX'
                      OR query ~* 'count\\(\\*\\) FROM public\\.messages'"""
            ).fetchall()
    queries = [str(q) for (q,) in rows]
    assert queries == ["SELECT count(*) FROM public.messages"], queries
