"""Index proofs as a role that is not a superuser (the Supabase / RDS case: it owns the
app's tables but may not load auto_explain), with writes allowed: what the rolled-back
build cannot prove, the scratch copy does, as it does without writes (real PostgreSQL).

Roles are cluster-wide: the test makes its own and drops it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from backend_checks.check import CheckOptions, run_check
from backend_checks.datagen import DatagenParams


@pytest.fixture
def app_role(
    generate_db: Callable[[DatagenParams], str], db_prefix: str
) -> Iterator[tuple[str, str]]:
    """A generated database without the search index, and a role that is no superuser
    but owns public.messages (so it may build an index on it), reads the rest and may
    become the app role: the database's DSN as postgres, and as that role."""
    dsn = generate_db(DatagenParams(messages=20_000, users=200, conversations=1_000, seed=6))
    role = f"{db_prefix}r{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX messages_search_vector_idx")
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER BYPASSRLS IN ROLE pg_read_all_data, authenticated"
            ).format(sql.Identifier(role))
        )
        conn.execute(
            sql.SQL("ALTER TABLE public.messages OWNER TO {}").format(sql.Identifier(role))
        )
    try:
        yield dsn, make_conninfo(dsn, user=role)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute("ALTER TABLE public.messages OWNER TO CURRENT_USER")
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_gin_index_the_build_cannot_prove_is_proven_on_a_scratch_copy(
    app_role: tuple[str, str],
) -> None:
    # It was "unproven: access to library "auto_explain" is not allowed" with no proof,
    # while the same database without --allow-writes proved it on a scratch copy.
    _, as_role = app_role
    options = CheckOptions(runs=3, only=["message_search"], allow_writes=True)
    seq = {c.id: c for c in run_check(as_role, options).checks}["seq_scans"]
    [item] = seq.evidence["suggestions"]
    assert (item["columns"], item["method"]) == (["search_vector"], "gin")
    assert item["proven"], item["proof"]
    assert "scratch copy" in item["proof"] and "@@" in item["proof"]
    # Why it was not built on the table, said with the proof (writes were allowed).
    assert 'not built on the table: access to library "auto_explain"' in item["proof"]
