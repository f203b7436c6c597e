"""What the backend commands' results.json says, checked across every check and both
commands: ``run.backend`` is a URL without secrets or notes, and the same managed cluster
reads the same in ``backend check`` and ``backend load``; every judged check's value is in
its target's unit; every check says in its reason what was compared; table_sizes has a
verdict that can fail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from backend_checks import server_health
from backend_checks.backend_info import backend_info, database_url
from backend_checks.check import CheckOptions, run_check
from backend_checks.load import LoadOptions, LoadRun
from backend_checks.load.verdict import to_results
from devicelab.config import load_targets
from devicelab.models import Results

#: The DSN ``ManagedPostgres.dsn()`` gives (its unix socket) and the URL both commands
#: must write for it.
MANAGED_DSN = "host=/tmp/dl-x/pg15/data port=48811 user=postgres dbname=devicelab"
MANAGED_URL = "postgresql://postgres@/devicelab?host=/tmp/dl-x/pg15/data&port=48811"


def _load_results(target: str, kind: Any = "postgres") -> Results:
    now = datetime.now(UTC)
    run = LoadRun(target=target, started_at=now, finished_at=now,
                  options=LoadOptions(users=[1]), identities=1, steps=[])  # fmt: skip
    return to_results(run, load_targets(), backend_kind=kind)


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        (MANAGED_DSN, MANAGED_URL),
        ("host=127.0.0.1 port=5432 user=postgres dbname=x password=s3cret",
         "postgresql://postgres@127.0.0.1:5432/x"),
        ("postgresql://app:s3cret@db.example.com:6543/chat?sslmode=require",
         "postgresql://app@db.example.com:6543/chat"),
        ("postgresql://u:s3cret@h1:5433,h2/db", "postgresql://u@h1:5433,h2/db"),
        ("host=::1 port=5 dbname=a", "postgresql://[::1]:5/a"),
        ("dbname=my\\ db user=me@corp", "postgresql://me%40corp@/my%20db"),
    ],
)  # fmt: skip
def test_a_dsn_becomes_a_url_libpq_reads_back_without_its_password(dsn: str, url: str) -> None:
    assert database_url(dsn) == url
    back, given = conninfo_to_dict(url), conninfo_to_dict(dsn)
    assert "password" not in back
    assert {k: back.get(k) for k in ("host", "port", "user", "dbname")} == {
        k: given.get(k) for k in ("host", "port", "user", "dbname")
    }


def test_the_managed_cluster_reads_the_same_in_backend_check_and_backend_load() -> None:
    from backend_checks.check import _backend  # the helper run_check writes run.backend with

    # backend load labels its run with the redacted DSN; backend check has the DSN itself.
    load = _load_results(MANAGED_DSN).run.backend
    check = _backend("postgres", MANAGED_DSN)
    assert load is not None and load == check
    assert check.model_dump() == {"kind": "postgres", "url": MANAGED_URL}


def test_the_reference_load_names_the_server_it_talked_to_without_the_note() -> None:
    label = "http://127.0.0.1:40001 (reference server over the managed cluster)"
    backend = _load_results(label, "reference").run.backend
    assert backend is not None
    assert backend.model_dump() == {"kind": "reference", "url": "http://127.0.0.1:40001"}


def test_api_urls_lose_user_key_and_query_and_unknown_targets_give_null() -> None:
    info = backend_info("supabase", "https://u:pw@abc.supabase.co/?apikey=eyJhbGciOi")
    assert info is not None and info.url == "https://abc.supabase.co"
    same = backend_info("supabase", "https://abc.supabase.co, https://abc.supabase.co")
    assert same is not None and same.url == "https://abc.supabase.co"
    assert backend_info("supabase", "https://a.supabase.co, https://b.supabase.co") is None
    assert _load_results("imported: step100.json").run.backend is None


@pytest.fixture(scope="module")
def checked(healthy_db: str) -> Results:
    """One whole backend check of the shared healthy database (few runs: the verdicts'
    shape is under test here, not the timings)."""
    return run_check(healthy_db, CheckOptions(runs=3))


def test_every_judged_check_is_in_its_targets_unit(checked: Results) -> None:
    judged = [c for c in checked.checks if c.target is not None]
    assert {"seq_scans", "index_usage", "unused_indexes", "table_sizes"} <= {c.id for c in judged}
    wrong = {c.id: (c.unit, c.target.unit) for c in judged if c.target and c.unit != c.target.unit}
    assert not wrong, wrong


def test_every_check_says_what_was_compared(checked: Results) -> None:
    empty = [c.id for c in checked.checks if not c.reason.strip()]
    assert not empty, empty
    judged = [c for c in checked.checks if c.status in ("pass", "fail") and c.target]
    for check in judged:
        assert " meets " in check.reason or " misses " in check.reason, (check.id, check.reason)


def test_a_check_of_a_given_dsn_names_a_plain_database(checked: Results, healthy_db: str) -> None:
    backend = checked.run.backend
    assert backend is not None and backend.kind == "postgres"
    assert backend.url == database_url(healthy_db) and backend.url.startswith("postgresql://")
    assert "(" not in backend.url and " " not in backend.url


def test_table_sizes_is_judged_against_the_servers_cache(checked: Results) -> None:
    sizes = next(c for c in checked.checks if c.id == "table_sizes")
    assert sizes.target is not None and sizes.target.op == "<=" and sizes.target.value == 100
    assert sizes.status == "pass" and "effective_cache_size" in sizes.reason, sizes.reason
    ev = sizes.evidence
    assert ev["total_bytes"] > 0 and ev["effective_cache_size_bytes"] > 0
    assert sizes.value == round(100 * ev["total_bytes"] / ev["effective_cache_size_bytes"], 3)


def test_table_sizes_fails_when_the_data_outgrows_the_cache(
    healthy_db: str, list_tables: Callable[[str], list[str]]
) -> None:
    with psycopg.connect(healthy_db) as conn:
        conn.execute("SET effective_cache_size = '1MB'")  # the generated set is bigger
        sizes = server_health.table_sizes(conn)
    assert sizes.status == "fail" and sizes.value is not None and sizes.value > 100
    assert " misses <= 100%: " in sizes.reason, sizes.reason
    assert sizes.evidence["tables_counted"] == len(list_tables(healthy_db))
