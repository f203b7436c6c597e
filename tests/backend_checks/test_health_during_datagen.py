"""Health checks while ``backend datagen`` rebuilds the database (an outside tester's
findings on PostgreSQL 15): a table swapped in under a live name inside the statistics
window, devicelab's staging schema, and the data generator's own statements.

The swap is done here as datagen does it (build in ``devicelab_stage``, drop the live
table, ``ALTER TABLE ... SET SCHEMA public``), between two snapshots: deterministic.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from backend_checks import health, server_health
from backend_checks.datagen import STAGE_SCHEMA, DatagenParams
from backend_checks.suite import load_suite
from backend_checks.unused import unused_indexes

TINY = DatagenParams(messages=2_000, users=50, conversations=100, seed=5)

#: The index message_fetch needs (the reference schema's name for it).
FETCH_INDEX = "public.messages_conversation_created_idx"


@pytest.fixture
def tiny_db(generate_db: Callable[[DatagenParams], str]) -> str:
    """A database of its own (tests here replace its tables)."""
    return generate_db(TINY)


@contextlib.contextmanager
def _conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def _read_messages(conn: psycopg.Connection[Any], times: int) -> None:
    """``times`` sequential and ``times`` index reads of public.messages."""
    conn.execute("SET enable_seqscan = off")
    for _ in range(times):
        conn.execute(
            """SELECT id FROM public.messages
               WHERE conversation_id = (SELECT id FROM public.conversations LIMIT 1)
               ORDER BY created_at DESC LIMIT 20"""
        ).fetchall()
    conn.execute("RESET enable_seqscan")
    for _ in range(times):
        conn.execute("SELECT count(*) FROM public.messages WHERE content LIKE '%x%'").fetchall()


def _stage_messages(conn: psycopg.Connection[Any]) -> None:
    """A copy of public.messages in the staging schema, indexes under the live names."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGE_SCHEMA}")
    conn.execute(f"CREATE TABLE {STAGE_SCHEMA}.messages (LIKE public.messages)")
    conn.execute(f"INSERT INTO {STAGE_SCHEMA}.messages SELECT * FROM public.messages")
    defs = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'messages'"
    ).fetchall()
    for (ddl,) in defs:
        conn.execute(ddl.replace("ON public.messages", f"ON {STAGE_SCHEMA}.messages"))
    conn.execute(f"ANALYZE {STAGE_SCHEMA}.messages")


def _swap_messages(conn: psycopg.Connection[Any]) -> None:
    """datagen's swap of one table: drop the live one, move the staged one in."""
    with conn.transaction():
        conn.execute("DROP TABLE public.messages CASCADE")
        conn.execute(f"ALTER TABLE {STAGE_SCHEMA}.messages SET SCHEMA public")


def _window_with_swap(conn: psycopg.Connection[Any]) -> health.Window:
    """A window in which public.messages, much read before it, is replaced and read."""
    _read_messages(conn, 30)  # the old table's counters: far above the new one's
    _stage_messages(conn)
    window = health.Window.open(conn)
    _swap_messages(conn)
    _read_messages(conn, 2)
    return window.close(conn)


def _usage(before: Any, after: Any, before_idx: Any, after_idx: Any) -> Any:
    return health.index_usage(
        before,
        after,
        before_idx,
        after_idx,
        specs=load_suite(ids=["message_fetch"]),
        min_table_rows=1_000,
        min_table_pages=1,
    )


def _assert_sane(check: Any) -> None:
    blocks = check.evidence["blocks"]
    assert all(v >= 0 for v in blocks.values()), blocks
    for key in ("tables_pct", "indexes_pct", "cumulative_pct"):
        pct = check.evidence[key]
        assert pct is None or 0 <= pct <= 100, (key, pct)
    assert check.status != "fail", check.reason
    assert "shared_buffers" not in (check.reason or "")


# 1. A table replaced inside the window.


def test_a_table_replaced_in_the_window_is_not_counted_and_is_named(tiny_db: str) -> None:
    with _conn(tiny_db) as conn:
        window = _window_with_swap(conn)
    ratio = health.buffer_hit_ratio(window.before, window.after)
    _assert_sane(ratio)
    assert window.before["public.messages"].relid != window.after["public.messages"].relid
    assert ratio.evidence["replaced_during_window"] == ["public.messages"]
    assert "public.messages replaced during the window" in (ratio.reason or "")
    if ratio.status == "error":  # nothing else was read in the window
        assert (ratio.reason or "").startswith("cannot measure")

    usage = _usage(window.before, window.after, window.before_idx, window.after_idx)
    assert "public.messages" in usage.evidence["replaced_during_window"]
    assert FETCH_INDEX in usage.evidence["replaced_during_window"]
    for need in usage.evidence["critical"]:
        assert need["scans_in_window"] is None, need  # the index is another one now
    assert all(t["table"] != "public.messages" for t in usage.evidence["tables"])
    assert usage.status == "error", usage.reason  # nothing comparable: never a pass or fail
    assert "run the check again" in (usage.reason or "")


def test_summed_windows_count_what_was_comparable_and_flag_the_rest(tiny_db: str) -> None:
    with _conn(tiny_db) as conn:
        quiet = health.Window.open(conn)
        _read_messages(conn, 3)
        quiet = quiet.close(conn)
        swapped = _window_with_swap(conn)
        after_swap = health.Window.open(conn)
        _read_messages(conn, 3)
        after_swap = after_swap.close(conn)
    before, after, before_idx, after_idx = health.Window.total([quiet, swapped, after_swap])
    ratio = health.buffer_hit_ratio(before, after)
    _assert_sane(ratio)  # a pass, or (the new index read cold) an error saying why
    for name, now in after.items():
        then = before[name]
        assert now.relid == then.relid, name
        assert all(getattr(now, c) >= getattr(then, c) for c in ("heap_hit", "heap_read"))
    assert after["public.messages"].replaced == 1
    assert after["public.messages"].seq_scan == 6  # the quiet windows' reads, both tables
    assert after_idx[FETCH_INDEX].idx_scan >= 6 and after_idx[FETCH_INDEX].replaced == 1
    if ratio.status == "error":
        assert "not judged, run the check again" in (ratio.reason or "")
    assert ratio.evidence["replaced_during_window"] == ["public.messages"]
    usage = _usage(before, after, before_idx, after_idx)
    fetch = next(n for n in usage.evidence["critical"] if n["query"] == "message_fetch")
    assert fetch["scans_in_window"] >= 6
    assert "public.messages, " in (usage.reason or "")  # the table, then its indexes
    assert "replaced during the window" in (usage.reason or "")


def test_a_window_with_nothing_comparable_is_an_error_not_a_fail() -> None:
    def stats(relid: int, hit: int, read: int) -> health.TableStats:
        return health.TableStats(table="public.messages", relid=relid, rows=300_000,
                                 seq_scan=1, seq_tup_read=1, idx_scan=1, heap_hit=hit,
                                 heap_read=read, idx_hit=hit, idx_read=read, dead=0)  # fmt: skip

    # The tester's numbers: the old table's counters subtracted from the new one's.
    check = health.buffer_hit_ratio(
        {"public.messages": stats(16_384, 90_000, 20_000)},
        {"public.messages": stats(16_999, 1_000, 5_745)},
    )
    assert check.status == "error", check.reason
    assert check.evidence["tables_pct"] is None and check.evidence["indexes_pct"] is None
    assert check.evidence["replaced_during_window"] == ["public.messages"]
    assert "shared_buffers" not in (check.reason or "")


# 2. devicelab's staging schema.


def test_the_staging_schema_is_in_no_health_check(tiny_db: str) -> None:
    with _conn(tiny_db) as conn:
        _stage_messages(conn)  # a killed datagen's left-over, read in the window
        conn.execute(f"CREATE TABLE {STAGE_SCHEMA}._dl_conv AS SELECT * FROM public.conversations")
        window = health.Window.open(conn)
        for _ in range(7):
            conn.execute(f"SELECT count(*) FROM {STAGE_SCHEMA}.messages").fetchall()
            conn.execute(f"SELECT count(*) FROM {STAGE_SCHEMA}._dl_conv").fetchall()
        window = window.close(conn)
        sizes = server_health.table_sizes(conn)
        bloat = server_health.bloat(conn, min_table_rows=1)
        staged = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            (STAGE_SCHEMA,),
        ).fetchone()
    ours = f"{STAGE_SCHEMA}."
    assert not [n for n in (*window.after, *window.after_idx) if n.startswith(ours)]
    usage = _usage(window.before, window.after, window.before_idx, window.after_idx)
    assert not [t for t in usage.evidence["tables"] if t["table"].startswith(ours)]
    assert ours not in (usage.reason or "")
    assert not [t for t in sizes.evidence["tables"] if t["table"].startswith(ours)]
    assert staged and staged[0] and sizes.evidence["stale_staging_bytes"] == staged[0]
    assert f"not counted: schema {STAGE_SCHEMA}" in (sizes.reason or "")
    assert not [t for t in bloat.evidence["tables"] if t["table"].startswith(ours)]
    with _conn(tiny_db) as conn:  # its indexes are never scanned: not the app's to drop
        unused = unused_indexes(conn, window_start=datetime.now(UTC) - timedelta(days=30))
    assert not [c for c in unused.evidence["unused"] if c["table"].startswith(ours)]


def test_table_sizes_says_nothing_of_staging_when_there_is_none(tiny_db: str) -> None:
    with _conn(tiny_db) as conn:
        sizes = server_health.table_sizes(conn)
    assert "stale_staging_bytes" not in sizes.evidence
    assert STAGE_SCHEMA not in (sizes.reason or "")


# 3. The data generator's statements in pg_stat_statements.


def test_slow_queries_leaves_out_the_data_generator_s_statements(
    load_cluster: Callable[[str], contextlib.AbstractContextManager[str]],
) -> None:
    with load_cluster("dgslow") as url, _conn(url) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute(f"CREATE SCHEMA {STAGE_SCHEMA}")
        conn.execute(f"CREATE UNLOGGED TABLE {STAGE_SCHEMA}._dl_half AS SELECT 1 AS k")
        for _ in range(5):  # five datagens' worth, each over 100 ms
            conn.execute(f"SELECT pg_sleep(0.11) FROM {STAGE_SCHEMA}._dl_half").fetchall()
            conn.execute("SELECT pg_sleep(0.11), count(*) FROM public.devicelab_meta").fetchall()
            conn.execute("SELECT pg_sleep(0.11) FROM public.profiles LIMIT 1").fetchall()
        slow = server_health.slow_queries(conn)
    outliers = [q["query"] for q in slow.evidence["outliers"]]
    assert len(outliers) == 1 and "public.profiles" in outliers[0], outliers
    assert not [q for q in slow.evidence["top"] if "_dl_" in q["query"]]
    assert not [q for q in slow.evidence["top"] if "devicelab_meta" in q["query"]]
    assert slow.evidence["devicelab_slow_statements_left_out"] == 2
    assert slow.evidence["devicelab_statements_left_out"] >= 3  # the CREATE TABLE too
    assert slow.status == "fail"  # the app's statement still is an outlier
    assert "1 statement with mean > 100 ms" in (slow.reason or "")
    assert "of devicelab's data generator" in (slow.reason or "")
