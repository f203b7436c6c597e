"""`backend check` on databases that are not what it expects: a foreign ``messages`` table,
a schema a query cannot run on, an INVALID index, a dropped function (real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backend_checks.check import CheckOptions, run_check
from backend_checks.datagen import DatagenParams
from backend_checks.db import translate
from devicelab.errors import BackendUnavailable, BadInput, ProbeFailed
from tests.backend_checks.cli_run import cli, one_line

#: The index message_fetch needs (the reference schema's name for it).
FETCH_INDEX = "public.messages_conversation_created_idx"


def _with(make_db: Callable[[], str], sql: str) -> str:
    """A scratch database (its DSN) after ``sql``."""
    dsn = make_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]
    return dsn


@pytest.mark.parametrize("allow_writes", [False, True])
def test_a_foreign_messages_table_is_one_line_exit_2_naming_what_is_missing(
    make_db: Callable[[], str], tmp_path: Path, allow_writes: bool
) -> None:
    # A traceback ending in UndefinedTable "conversations" (from resolve_params), exit 1.
    dsn = _with(
        make_db, "CREATE TABLE messages (id int, body text); INSERT INTO messages VALUES (1, 'x')"
    )
    flags = ["--allow-writes"] if allow_writes else []
    proc = cli("backend", "check", "--dsn", dsn, "--out", str(tmp_path), *flags)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    assert "reference messaging schema" in line
    assert "public.conversations" in line and "public.message_read_receipts" in line
    assert "devicelab backend datagen --dsn DSN" in line and "--allow-writes" in line
    with psycopg.connect(dsn) as conn:  # not seeded over, even with --allow-writes
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)


def test_a_database_error_escaping_the_suite_is_one_line_not_a_traceback(
    make_db: Callable[[], str], tmp_path: Path
) -> None:
    # Every table and column the pre-check asks for is there, but participants is text:
    # the parameters query's unnest() fails inside the suite.
    dsn = _with(
        make_db,
        """CREATE TABLE profiles (id uuid);
           CREATE TABLE conversations (id uuid, participants text);
           CREATE TABLE messages (id uuid, conversation_id uuid, created_at timestamptz);
           CREATE TABLE message_read_receipts (message_id uuid, user_id uuid);
           INSERT INTO conversations VALUES (gen_random_uuid(), 'x');
           INSERT INTO messages SELECT gen_random_uuid(), id, now() FROM conversations""",
    )
    proc = cli("backend", "check", "--dsn", dsn, "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    assert "does not match devicelab's reference schema" in line and "unnest" in line


def test_database_errors_translate_by_what_the_caller_does_next(pg_server: None) -> None:
    from tests.backend_checks.conftest import dsn_of

    dsn = dsn_of("postgres")
    caught: list[Any] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in (
            "SELECT * FROM devicelab_no_such_table",
            "SELECT 1 / 0",
            "SET statement_timeout = 1; SELECT pg_sleep(1)",
        ):
            try:
                conn.execute(sql)  # type: ignore[arg-type]
            except psycopg.Error as exc:
                caught.append(translate(exc, dsn, "the backend check"))
    kinds = [type(error) for error in caught]
    assert kinds == [BadInput, ProbeFailed, BackendUnavailable]
    assert all(error.one_line().startswith("the backend check ") for error in caught)
    assert all("\n" not in error.one_line() for error in caught)


def _check(dsn: str, *queries: str) -> dict[str, Any]:
    results = run_check(dsn, CheckOptions(runs=3, only=list(queries)))
    return {check.id: check for check in results.checks}


def test_an_invalid_index_is_named_with_its_fix_and_not_created_twice(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    # It was "not scanned", with CREATE INDEX of the same columns suggested: applied, the
    # broken index stayed, never mentioned.
    dsn = generate_db(DatagenParams(messages=20_000, users=200, conversations=1_000, seed=7))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{FETCH_INDEX}'::regclass"  # type: ignore[arg-type]
        )
    found = _check(dsn, "message_fetch")
    usage = found["index_usage"]
    assert usage.status == "fail"
    assert f"{FETCH_INDEX} is INVALID" in usage.reason
    assert f"REINDEX INDEX CONCURRENTLY {FETCH_INDEX}" in usage.reason
    assert f"DROP INDEX CONCURRENTLY {FETCH_INDEX}" in usage.reason
    assert "not scanned" not in usage.reason
    [critical] = [c for c in usage.evidence["critical"] if c["columns"][0] == "conversation_id"]
    assert critical["invalid_indexes"] == [FETCH_INDEX] and critical["indexes"] == []
    fixes = [s for s in usage.evidence["suggestions"] if s["table"] == "public.messages"]
    assert fixes and all(s["ddl"] == f"REINDEX INDEX CONCURRENTLY {FETCH_INDEX}" for s in fixes)
    assert all(s["invalid_index"] == FETCH_INDEX for s in fixes)
    assert "CREATE INDEX ON public.messages" not in found["seq_scans"].reason
    unused = found["unused_indexes"]
    assert [i["index"] for i in unused.evidence["invalid"]] == [FETCH_INDEX.split(".")[1]]
    assert "INVALID" in unused.reason


def test_a_query_that_failed_is_named_instead_of_its_index_being_unscanned(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    dsn = generate_db(DatagenParams(messages=20_000, users=200, conversations=1_000, seed=7))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP FUNCTION public.search_messages")
    found = _check(dsn, "message_search")
    assert found["message_search"].status == "error"
    usage = found["index_usage"]
    assert "not scanned" not in usage.reason
    assert "not judged: message_search: its query failed (function search_messages" in (
        usage.reason
    )
    assert "does not exist" in usage.reason
    # Not a finding about the index (a fail would read as a regression, exit 1): the
    # query's own check is the error, and this one could not judge.
    assert usage.status == "error" and usage.value == 0
    assert usage.evidence["not_judged"] and not usage.evidence["problems"]
