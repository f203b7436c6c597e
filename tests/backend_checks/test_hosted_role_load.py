"""The load as a hosted project's role (an outside tester's findings): a role that is no
superuser, has a password and a connection limit, reads the app's tables but not
``public.devicelab_meta``.

- ``backend load --mix read`` runs (it writes nothing: whether the data is ours does not
  matter); the writing mix is refused in one line naming the GRANT that lets it tell;
- ``backend check --load`` keeps what it measured (results.json written), its load checks
  name the database they loaded (no password) and say the steps exceed the connections
  the server has free for the role;
- a load that cannot run at all makes the load checks errors, the SQL checks kept.

Roles are cluster-wide: each module makes its own (``dl_t_<hex>``) and drops it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backend_checks.check import CheckOptions, run_check
from backend_checks.check_load import connection_room
from backend_checks.datagen import DatagenParams
from devicelab.errors import BackendUnavailable

TINY = DatagenParams(messages=2_000, users=50, conversations=100, seed=11)
#: Few enough that the load's steps meet the role's limit, not the shared server's.
LIMIT = 4
APP_TABLES = "auth.users, public.profiles, public.conversations, public.messages, " \
    "public.message_read_receipts"  # fmt: skip


@pytest.fixture(scope="module")
def role_dsn(generate_db: Callable[[DatagenParams], str]) -> Iterator[tuple[str, str]]:
    """(the DSN of a generated database as the capped role, with its password; the role)."""
    admin_dsn = generate_db(TINY)
    name, secret = f"dl_t_{uuid.uuid4().hex[:8]}", f"Pw{uuid.uuid4().hex[:10]}"
    role = sql.Identifier(name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN PASSWORD {} BYPASSRLS CONNECTION LIMIT {}"
                " IN ROLE authenticated"
            ).format(role, sql.Literal(secret), sql.Literal(LIMIT))
        )
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA auth TO {}").format(role))
        conn.execute(sql.SQL(f"GRANT SELECT ON {APP_TABLES} TO {{}}").format(role))  # type: ignore[arg-type]
    try:
        yield make_conninfo(admin_dsn, user=name, password=secret), name
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
            conn.execute(sql.SQL("DROP ROLE {}").format(role))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "devicelab", "backend", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)


def test_read_load_runs_for_a_role_that_may_not_read_the_mark(
    role_dsn: tuple[str, str],
) -> None:
    dsn, _ = role_dsn
    ran = _cli("load", "--dsn", dsn, "--users", "2", "--duration", "1s", "--mix", "read")
    assert "Traceback" not in ran.stderr, ran.stderr
    assert ran.returncode in (0, 1), ran.stderr
    assert "target:" in ran.stdout
    assert "exceed" not in ran.stderr  # 2 sessions fit the role's limit


def test_a_load_step_past_the_roles_connections_is_said_before_it_runs(
    role_dsn: tuple[str, str],
) -> None:
    # `check --load` said so; `backend load --dsn` opened 1,000 sessions on a hosted
    # database's direct-connection cap without a word.
    dsn, _ = role_dsn
    ran = _cli("load", "--dsn", dsn, "--users", "10", "--duration", "1s", "--mix", "read")
    assert "Traceback" not in ran.stderr, ran.stderr
    assert "warning: 10 SQL sessions exceed the" in ran.stderr, ran.stderr
    assert conninfo_to_dict(dsn)["password"] not in ran.stderr + ran.stdout


def test_writing_load_is_refused_in_one_line_with_the_grant(role_dsn: tuple[str, str]) -> None:
    dsn, name = role_dsn
    ran = _cli("load", "--dsn", dsn, "--users", "2", "--duration", "1s")
    assert ran.returncode == 2, ran.stderr
    assert "Traceback" not in ran.stderr
    assert f"GRANT SELECT ON public.devicelab_meta TO {name}" in ran.stderr
    assert "permission denied for table devicelab_meta" in ran.stderr
    assert conninfo_to_dict(dsn)["password"] not in ran.stderr + ran.stdout


def test_check_load_keeps_its_results_and_names_its_target(
    role_dsn: tuple[str, str], tmp_path: Path
) -> None:
    dsn, name = role_dsn
    ran = _cli("check", "--dsn", dsn, "--load", "1s", "--runs", "3", "--out", str(tmp_path))
    assert "Traceback" not in ran.stderr, ran.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    checks = {c["id"]: c for c in results["checks"]}
    assert checks["message_fetch"]["status"] in ("pass", "fail")
    db = conninfo_to_dict(dsn)
    for cid in ("load_100", "load_1000"):
        load = checks[cid]
        where = f"postgresql://{name}@{db['host']}:{db['port']}/{db['dbname']}"
        assert load["evidence"]["target"]["database"] == where
        assert load["evidence"]["target"]["transport"] == "sql"
        assert "devicelab backend load --url" in load["reason"]
        assert load["evidence"]["connections"]["role_limit"] == LIMIT
        assert load["evidence"]["connections"]["free"] <= LIMIT
        assert "exceed the" in load["reason"], load["reason"]
        assert any(f"TO {name}" in note for note in load["evidence"]["notes"])
    assert str(db["password"]) not in (tmp_path / "results.json").read_text()


def test_connection_room_counts_the_roles_limit(role_dsn: tuple[str, str]) -> None:
    dsn, _ = role_dsn
    room = connection_room(dsn)
    assert room is not None
    assert room.role_limit == LIMIT
    assert 0 < room.free <= LIMIT
    assert room.max_connections >= room.free


def test_a_load_that_cannot_run_keeps_the_measured_checks(
    role_dsn: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import backend_checks.load

    def gone(*_: object, **__: object) -> None:
        raise BackendUnavailable("the database went away", hint="start it again")

    # The failure comes after the SQL checks were measured: it must not drop them.
    monkeypatch.setattr(backend_checks.load, "run_load", gone)
    dsn, _ = role_dsn
    only = ["message_fetch", "load_100", "load_1000"]
    results = run_check(dsn, CheckOptions(runs=3, only=only, load_s=1))
    checks = {c.id: c for c in results.checks}
    assert checks["message_fetch"].status in ("pass", "fail")
    assert checks["load_100"].status == checks["load_1000"].status == "error"
    assert "the database went away" in checks["load_100"].reason
    assert results.exit_code() in (1, 3)
