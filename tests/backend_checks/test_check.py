"""The whole backend check against real databases: a healthy one passes, one missing the
index the story's queries need fails with the scan flagged and a proven suggestion."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backend_checks.check import CheckOptions, run_check
from backend_checks.datagen import DatagenParams
from devicelab.errors import BadInput, UnsafeActionRefused
from devicelab.models import Results
from devicelab.version import full_version

QUERY_IDS = {
    "message_fetch",
    "conversation_list",
    "unread_count",
    "message_search",
    "send_message",
    "mark_as_read",
}
HEALTH_IDS = {"index_usage", "seq_scans", "unused_indexes", "buffer_hit_ratio"}


def _by_id(results: Results) -> dict[str, object]:
    return {check.id: check for check in results.checks}


def _without(generate_db: Callable[[DatagenParams], str], params: DatagenParams, index: str) -> str:
    """A generated database (its DSN) with ``index`` dropped."""
    dsn = generate_db(params)
    with psycopg.connect(dsn) as conn:
        conn.execute(f"DROP INDEX {index}")  # type: ignore[arg-type]
    return dsn


def test_healthy_database_passes(healthy_db: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "devicelab",
            "backend",
            "check",
            "--dsn",
            healthy_db,
            "--out",
            str(tmp_path),
            "--runs",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = Results.model_validate_json((tmp_path / "results.json").read_text())
    checks = {c.id: c for c in results.checks}
    assert set(checks) >= QUERY_IDS | HEALTH_IDS
    assert results.run.kind == "backend" and results.run.backend is not None
    assert results.run.devicelab_version == full_version()  # the commit that measured
    assert all(checks[i].status == "pass" for i in QUERY_IDS | {"seq_scans", "index_usage"})
    fetch = checks["message_fetch"]
    assert fetch.target is not None and fetch.target.value == 50
    assert "messages_conversation_created_idx" in fetch.evidence["plan"]["indexes"]
    assert fetch.summary is not None and len(fetch.samples) == 10
    # Functions: the statements inside are explained (auto_explain, superuser here).
    inside = checks["mark_as_read"].evidence["nested"]
    assert any("message_read_receipts" in n["query"] for n in inside)
    # A fresh database's index statistics prove nothing: skipped, not failed.
    assert checks["unused_indexes"].status in ("skip", "pass")
    assert checks["buffer_hit_ratio"].value is not None and checks["buffer_hit_ratio"].value > 95
    # The reports were made with the story's targets, as `devicelab report` makes them.
    assert "No targets.yaml was given" not in (tmp_path / "report.md").read_text()


def test_missing_index_is_found_and_a_proven_suggestion_names_its_columns(
    generate_db: Callable[[DatagenParams], str], small_params: DatagenParams
) -> None:
    dsn = _without(generate_db, small_params, "messages_conversation_created_idx")
    results = run_check(dsn, CheckOptions(runs=5))
    assert results.exit_code() == 1
    checks = {c.id: c for c in results.checks}
    seq = checks["seq_scans"]
    assert seq.status == "fail"
    assert any(
        f["table"].endswith("messages") and "conversation_id" in (f["filter"] or "")
        for f in seq.evidence["flagged"]
    )
    suggestions = seq.evidence["suggestions"]
    best = [s for s in suggestions if s["table"] == "public.messages"]
    assert best and best[0]["columns"][:2] == ["conversation_id", "created_at DESC"]
    assert best[0]["proven"] and best[0]["cost_after"] < best[0]["cost_before"]
    assert "HypoPG" in best[0]["proof"]
    # HypoPG cannot see inside functions: no "cost 0 -> 0" line for mark_as_read's call.
    functions = ("mark_as_read", "send_message", "message_search")
    assert not [
        p for p in best[0]["proofs"] if p.startswith(tuple(f"HypoPG on {f}" for f in functions))
    ]
    assert checks["index_usage"].status == "fail"
    assert "conversation_id, created_at" in checks["index_usage"].reason
    assert json.dumps(results.model_dump(mode="json"))  # serializable


def test_empty_database_needs_allow_writes(
    empty_db: str, list_tables: Callable[[str], list[str]]
) -> None:
    with pytest.raises(UnsafeActionRefused, match="has no messaging schema or data"):
        run_check(empty_db)
    assert list_tables(empty_db) == []


def test_missing_gin_index_is_proven_on_the_table_when_allowed_else_on_a_scratch_copy(
    generate_db: Callable[[DatagenParams], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10K conversations (188 pages): reading them all per request is worth an index.
    dsn = _without(
        generate_db,
        DatagenParams(messages=20_000, users=200, conversations=10_000, seed=5),
        "conversations_participants_idx",
    )
    options = CheckOptions(runs=3, only=["message_fetch", "conversation_list"])

    def gin_suggestion(allowed: bool) -> dict[str, Any]:
        results = run_check(dsn, options.model_copy(update={"allow_writes": allowed}))
        seq = {c.id: c for c in results.checks}["seq_scans"]
        assert seq.status == "fail"
        [gin] = [s for s in seq.evidence["suggestions"] if s["method"] == "gin"]
        assert gin["table"] == "public.conversations" and gin["columns"] == ["participants"]
        return dict(gin)

    on_table, on_copy = gin_suggestion(True), gin_suggestion(False)
    assert on_table["proven"] and "rolled-back transaction on" in on_table["proof"]
    assert on_copy["proven"] and "scratch copy" in on_copy["proof"], on_copy["proof"]
    assert "participants @>" in on_copy["proof"]
    assert on_copy["cost_after"] <= on_copy["cost_before"] * 0.9
    # A table too big to copy during a check is not copied: unproven, and says why.
    monkeypatch.setattr("backend_checks.proofs.SCRATCH_MAX_ROWS", 1_000)
    too_big = gin_suggestion(False)
    assert not too_big["proven"] and "too many to copy" in too_big["proof"]
    assert "--allow-writes" in too_big["proof"]
    with psycopg.connect(dsn) as conn:  # the proofs left nothing behind
        names = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'conversations'")
        assert not [n for (n,) in names if n.startswith("devicelab_")]


def test_without_hypopg_a_btree_is_proven_on_a_scratch_copy_or_built_when_allowed(
    generate_db: Callable[[DatagenParams], str],
    small_params: DatagenParams,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = _without(generate_db, small_params, "messages_conversation_created_idx")
    monkeypatch.setattr("backend_checks.proofs._HYPOPG", "devicelab_no_such_extension")
    proofs = {}
    for allowed in (False, True):
        options = CheckOptions(runs=3, only=["message_fetch"], allow_writes=allowed)
        seq = {c.id: c for c in run_check(dsn, options).checks}["seq_scans"]
        [item] = seq.evidence["suggestions"]
        assert item["columns"] == ["conversation_id", "created_at DESC"]
        assert item["proven"], item["proof"]
        assert item["cost_after"] <= item["cost_before"] * 0.9
        proofs[allowed] = item["proof"]
    assert "scratch copy" in proofs[False] and "ORDER BY created_at DESC" in proofs[False]
    assert "rolled-back transaction on message_fetch" in proofs[True]


def test_a_missing_index_fails_even_where_the_table_is_small_enough_to_read_whole(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # 1,500 messages fit in a few dozen pages, below the size threshold: a scan of them is
    # flagged only because the index the queries need is missing and proven to help.
    dsn = _without(
        generate_db,
        DatagenParams(messages=1_500, users=50, conversations=100, seed=2),
        "messages_conversation_created_idx",
    )
    results = run_check(dsn, CheckOptions(runs=3))
    checks = {c.id: c for c in results.checks}
    assert results.exit_code() == 1
    usage = checks["index_usage"]
    assert usage.status == "fail"
    suggestions = usage.evidence["suggestions"]
    assert [(s["columns"], s["proven"]) for s in suggestions] == [
        (["conversation_id", "created_at DESC"], True)
    ]
    scans = checks["seq_scans"]
    assert scans.status == "fail"
    flagged = scans.evidence["flagged"]
    assert {(f["table"], f["below_size_threshold"]) for f in flagged} == {("messages", True)}
    assert {f["query"] for f in flagged} <= set(suggestions[0]["queries"])
    assert "conversation_list" in {f["query"] for f in flagged}


def test_without_its_gin_index_search_gets_that_index_suggested_and_nothing_else(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # search_messages' scan filters "($2 IS NULL) OR (conversation_id = $2)" and sorts by
    # ts_rank(...) first: an index on conversation_id (which exists) would remove nothing.
    dsn = _without(
        generate_db,
        DatagenParams(messages=20_000, users=200, conversations=1_000, seed=6),
        "messages_search_vector_idx",
    )
    items = {}
    for allowed in (False, True):
        options = CheckOptions(runs=3, only=["message_search"], allow_writes=allowed)
        seq = {c.id: c for c in run_check(dsn, options).checks}["seq_scans"]
        assert seq.status == "fail"
        [items[allowed]] = seq.evidence["suggestions"]
        assert (items[allowed]["table"], items[allowed]["columns"], items[allowed]["method"]) == (
            "public.messages",
            ["search_vector"],
            "gin",
        )
    # No writes allowed: proven on a scratch copy, by a search for one word.
    item = items[False]
    assert item["proven"] and "scratch copy" in item["proof"] and "@@" in item["proof"]
    # Allowed: built on the table, and the statement inside search_messages planned again
    # (EXPLAIN of the call itself is one Result node: it read "cost 10 -> 10", unproven).
    item = items[True]
    assert item["proven"], item["proofs"]
    assert "rolled-back transaction on message_search" in item["proof"]
    assert item["cost_after"] <= item["cost_before"] * 0.9


def test_an_index_that_removes_one_part_of_a_plan_is_proven(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # unread_count joins the caller's receipts to a conversation's messages; without the
    # receipts' user index it scans every receipt, about a quarter of the plan's cost.
    params = DatagenParams(messages=60_000, users=200, conversations=1_000, seed=8)
    dsn = _without(generate_db, params, "message_read_receipts_user_idx")
    results = run_check(dsn, CheckOptions(runs=3, only=["unread_count"]))
    seq = {c.id: c for c in results.checks}["seq_scans"]
    assert seq.status == "fail"
    [item] = [s for s in seq.evidence["suggestions"] if "receipts" in s["table"]]
    assert item["columns"] == ["user_id"] and item["method"] == "btree"
    assert item["proven"], item["proofs"]
    assert item["cost_after"] <= item["cost_before"] * 0.9


def _passes_then_fails_without_its_message_index(
    generate_db: Callable[[DatagenParams], str], params: DatagenParams
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checks of a database of ``params``, which must pass seq_scans and index_usage,
    and of the same database without its messages index, which must fail both."""
    healthy = {c.id: c for c in run_check(generate_db(params), CheckOptions(runs=3)).checks}
    assert healthy["seq_scans"].status == "pass", healthy["seq_scans"].reason
    assert healthy["index_usage"].status == "pass", healthy["index_usage"].reason
    dsn = _without(generate_db, params, "messages_conversation_created_idx")
    broken = {c.id: c for c in run_check(dsn, CheckOptions(runs=3)).checks}
    assert broken["seq_scans"].status == "fail" and broken["index_usage"].status == "fail"
    return healthy, broken


def test_few_conversations_pass_where_the_planner_rightly_reads_the_table(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # 10 conversations: unread_count's conversation holds about half of the 20K messages,
    # and counting them reads half the table. The planner has the index and scans instead,
    # rightly; without its index the same database still fails.
    params = DatagenParams(messages=20_000, users=100, conversations=10, seed=4)
    checks, broken = _passes_then_fails_without_its_message_index(generate_db, params)
    chosen = [t["table"] for t in checks["index_usage"].evidence["tables"] if "planner_choice" in t]
    assert chosen == ["public.messages"]
    plan = checks["unread_count"].evidence["plan"]
    assert [s["table"] for s in plan["seq_scans"] if s["planner_choice"]] == ["messages"]
    assert all(s["rows_returned"] >= 0.1 * s["rows_examined"] for s in plan["seq_scans"])
    assert not any(f.get("planner_choice") for f in broken["seq_scans"].evidence["flagged"])


def test_one_conversation_passes_where_the_index_we_would_suggest_is_there(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # Every message in one conversation: unread_count joins them all to half of all
    # receipts (the caller's), read whole. The receipts index on user_id, the one we would
    # suggest, is there and the planner rightly read the table; the query file names no
    # index on receipts, so only the suggestion tells. Without the message index the same
    # database still fails.
    # Seed 1: the planner reads the receipts whole (with seed 5 it picks the index).
    params = DatagenParams(messages=20_000, users=10, conversations=1, seed=1)
    checks, broken = _passes_then_fails_without_its_message_index(generate_db, params)
    scans = checks["unread_count"].evidence["plan"]["seq_scans"]
    receipts = [s for s in scans if s["table"] == "message_read_receipts"]
    assert receipts, "the plan no longer reads the receipts whole: pick another seed"
    assert all(s["planner_choice"] and not s["flagged"] for s in receipts)
    assert all(s["rows_examined"] >= 1_000 for s in receipts)  # big enough to be judged
    assert any(f["table"] == "messages" for f in broken["seq_scans"].evidence["flagged"])


def test_a_search_the_planner_serves_with_another_index_passes(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # 5,000 users in 2,000 conversations: the searching user is in a few, and the planner
    # reads their messages through the conversation index instead of the whole text
    # index, rightly. index_usage failed this healthy database ("messages_search_vector_idx
    # not scanned"); found by an outside tester at 100K messages.
    params = DatagenParams(messages=50_000, users=5_000, conversations=2_000, seed=1)
    results = run_check(generate_db(params), CheckOptions(runs=3, only=["message_search"]))
    usage = {c.id: c for c in results.checks}["index_usage"]
    [text] = [c for c in usage.evidence["critical"] if c["columns"] == ["search_vector"]]
    assert text["scans_in_window"] == 0, "the planner now scans the text index: pick a seed"
    assert text["served_by"] == ["messages_conversation_created_idx"]
    assert usage.status == "pass", usage.reason


def test_a_dropped_receipts_key_gets_a_unique_index_suggested(
    generate_db: Callable[[DatagenParams], str], small_params: DatagenParams
) -> None:
    # mark_as_read's INSERT ... ON CONFLICT (message_id, user_id) fails without a unique
    # index there; the suggestion was a plain CREATE INDEX, which would not fix it.
    dsn = generate_db(small_params)
    with psycopg.connect(dsn) as conn:
        conn.execute("ALTER TABLE message_read_receipts DROP CONSTRAINT message_read_receipts_pkey")
    results = run_check(dsn, CheckOptions(runs=3, only=["mark_as_read"]))
    checks = {c.id: c for c in results.checks}
    assert checks["mark_as_read"].status == "error"
    assert "ON CONFLICT" in (checks["mark_as_read"].reason or "")
    usage = checks["index_usage"]
    assert usage.status == "fail"
    [item] = [s for s in usage.evidence["suggestions"] if "receipts" in s["table"]]
    assert (
        item["ddl"] == "CREATE UNIQUE INDEX ON public.message_read_receipts (message_id, user_id)"
    )
    assert "mark_as_read: needs a unique index" in item["because"][0]


def test_a_schema_without_messages_is_named_as_such(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # datagen --messages 0 made the schema, users and conversations; the refusal said the
    # database had "no messaging schema".
    dsn = generate_db(DatagenParams(messages=0, users=100, conversations=50))
    with pytest.raises(UnsafeActionRefused, match="holds no messages to check"):
        run_check(dsn)


def test_the_check_leaves_no_dead_tuples_of_its_own(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # Nobody has read anything: every timed run of mark_as_read marks a whole conversation
    # and is rolled back, leaving one dead receipt per message. Judged at the end, the
    # check failed its own bloat; left, the next check failed it too.
    params = DatagenParams(messages=20_000, users=20, conversations=5, unread=100_000)
    dsn = generate_db(params)
    for _ in range(2):
        bloat = {c.id: c for c in run_check(dsn, CheckOptions(runs=3)).checks}["bloat"]
        assert bloat.status == "pass", bloat.reason
        assert "public.message_read_receipts" in bloat.evidence["vacuumed_after"]
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'message_read_receipts'"
        ).fetchone()
    assert row == (0,)


def test_vacuum_gives_up_soon_behind_a_lock_and_does_the_rest(make_db: Callable[[], str]) -> None:
    # The check's closing VACUUM must not hang on a production server where an index is
    # being built (or autovacuum runs) on one of the tables.
    from backend_checks.server_health import vacuum

    dsn = make_db()
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE busy (x int); CREATE TABLE quiet (x int)")
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn) as conn:
        holder.execute("LOCK TABLE busy IN SHARE UPDATE EXCLUSIVE MODE")
        start = time.monotonic()
        assert vacuum(conn, ["public.busy", "public.quiet"]) == ["public.quiet"]
        assert time.monotonic() - start < 10
        assert not conn.autocommit
        assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)


def test_only_takes_every_check_id_of_backend_check(healthy_db: str) -> None:
    # only=["load_100"] (or a realtime or health id) was "unknown query id(s)": the
    # suite's loader knew only its query files, though run_check filters on the rest.
    load_only = run_check(healthy_db, CheckOptions(only=["load_100"]))
    assert [(c.id, c.status) for c in load_only.checks] == [
        ("load_100", "skip"),
        ("load_1000", "skip"),
    ]
    health = run_check(healthy_db, CheckOptions(only=["buffer_hit_ratio"], runs=1))
    # A server check is judged on the queries' windows: all of them run and come with it;
    # the realtime, storage and load checks, not named, do not.
    ids = {c.id for c in health.checks}
    assert {"buffer_hit_ratio", "message_fetch", "message_search"} <= ids
    assert not ids & {"realtime_broadcast", "signed_url", "load_100"}
    with pytest.raises(BadInput, match="unknown check id"):
        run_check(healthy_db, CheckOptions(only=["load_10"]))
