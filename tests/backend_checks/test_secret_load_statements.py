"""A load step's pg_stat_statements deltas hold no password: the statements' texts are
kept as they were sent (an ALTER ROLE ... PASSWORD of another session included)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import psycopg

from backend_checks.load.dbstats import snapshot


def test_a_load_steps_statement_texts_hold_no_password(
    load_cluster: Callable[[str], contextlib.AbstractContextManager[str]],
) -> None:
    with load_cluster("dlsecretstats") as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute("CREATE ROLE dl_t_stats_r")
        try:
            conn.execute("ALTER ROLE dl_t_stats_r PASSWORD E'EscPw_111'")
            conn.execute("ALTER ROLE dl_t_stats_r PASSWORD $$DolPw_222$$")
            row = conn.execute(
                "SELECT extnamespace::regnamespace::text FROM pg_extension"
                " WHERE extname = 'pg_stat_statements'"
            ).fetchone()
            assert row is not None
            taken = snapshot(conn, str(row[0]))
        finally:
            conn.execute("DROP ROLE dl_t_stats_r")
    texts = json.dumps(taken.statements)
    assert "ALTER ROLE" in texts, texts  # the statements are there ...
    assert "EscPw_111" not in texts and "DolPw_222" not in texts  # ... their passwords not
