"""Connections: DSN redaction and the one-line errors of a bad DSN (real server)."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_checks.db import connect, password_of, redact, redact_sql
from devicelab.errors import BackendUnavailable
from tests.backend_checks.conftest import dsn_of


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        ("postgresql://bob:s3cr3t@db.example:5432/app", "s3cr3t"),
        ("postgres://bob:s3cr3t@db.example/app?sslmode=require", "s3cr3t"),
        ("host=db port=5432 user=bob password=s3cr3t dbname=app", "s3cr3t"),
        ("host=db password = 's3 cr3t' dbname=app", "s3 cr3t"),
        ("postgresql://db.example/app?user=bob&password=s3cr3t", "s3cr3t"),
    ],
)
def test_redact_every_dsn_form(dsn: str, secret: str) -> None:
    assert password_of(dsn) == secret
    assert secret not in redact(dsn, dsn)
    assert "***" in redact(dsn, dsn)


@given(st.text(alphabet=st.characters(blacklist_characters=" '\\/:?&#\n\r\t"), min_size=3))
def test_redact_never_leaks_a_url_password(secret: str) -> None:
    dsn = f"postgresql://user:{secret}@host:5432/db"
    text = f"could not connect to {dsn}: failed near {secret!r}"
    assert secret not in redact(text, dsn)


@pytest.mark.parametrize(
    ("dsn", "misread"),
    [
        ("postgresql://u:p@zq@db/app", True),
        ("postgresql://u:pa/zq@db/app", True),
        ("postgresql://u:p@zq@db?sslmode=require", True),
        ("postgresql://u:secret@db/app", False),
        ("postgresql://u:p?ss@db/app", False),  # libpq reads this one right
        ("postgresql://u:secret@db?application_name=me@lab", False),
        ("postgresql://u:secret@db/app?application_name=me@lab", False),
        ("host=db password=p@ss/word", False),
    ],
)
def test_only_a_url_libpq_would_misread_is_refused_early(dsn: str, misread: bool) -> None:
    from backend_checks.db import _misread_userinfo

    shown = _misread_userinfo(dsn)
    assert (shown is not None) == misread, shown
    assert shown is None or ("zq" not in shown and shown.startswith("postgresql://u:***@db"))


def test_unreachable_server_is_backend_unavailable_without_password() -> None:
    with pytest.raises(BackendUnavailable) as caught:
        connect("postgresql://postgres:hunter2pw@127.0.0.1:1/x", connect_timeout=2)
    assert "hunter2pw" not in caught.value.one_line()
    assert "Connection refused" in caught.value.one_line()
    assert caught.value.exit_code == 3


def test_malformed_dsn_echoing_the_password_is_redacted() -> None:
    with pytest.raises(BackendUnavailable) as caught:
        connect("host=127.0.0.1 password=hunter2pw bogus")
    assert "hunter2pw" not in caught.value.one_line()


def _check_with(dsn: str) -> subprocess.CompletedProcess[str]:
    """``devicelab backend check --dsn DSN`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "devicelab", "backend", "check", "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://postgres:hunter2pw@127.0.0.1:1/x", "host=127.0.0.1 password=hunter2pw junk"],
)
def test_cli_bad_dsn_one_line_exit_3(dsn: str) -> None:
    proc = _check_with(dsn)
    assert proc.returncode == 3, proc.stderr
    assert "hunter2pw" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("devicelab: error:")


@pytest.mark.parametrize(
    ("dsn", "pieces"),
    [
        # libpq ends the user info at the first '@' before the first '/': it would take
        # "zv9:k7" for the host and port, "xq" for the port, and quote them back.
        ("postgresql://postgres:xq@zv9:k7@127.0.0.1:5432/x", ["zv9", "k7", "xq"]),
        ("postgresql://postgres:xq/zv9@127.0.0.1:5432/x", ["zv9", "xq"]),
        # Both: libpq takes "zv9" for the host and "k7@127..." for the database name.
        ("postgresql://postgres:xq@zv9/k7@127.0.0.1:5432/x", ["zv9", "k7", "xq"]),
        # '' is not libpq's escape for a quote: the value ends early and the parse error
        # quotes the token it stumbled on, a piece of the password.
        ("host=127.0.0.1 password='xq''zv9 k7' sslmode=bogus", ["zv9", "k7", "xq"]),
    ],
)
def test_a_password_libpq_would_misread_never_shows_a_piece(dsn: str, pieces: list[str]) -> None:
    proc = _check_with(dsn)
    assert proc.returncode == 3, proc.stderr
    out = proc.stdout + proc.stderr
    assert [piece for piece in pieces if piece in out] == [], out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("devicelab: error: invalid DSN"), out
    if dsn.startswith("postgresql://"):
        assert "postgresql://postgres:***@127.0.0.1:5432/x" in lines[0]
        assert "percent-encode" in lines[0]


def test_the_dsns_own_options_and_connect_timeout_are_kept(pg_server: None) -> None:
    dsn = dsn_of("postgres") + " connect_timeout=7 options='-c search_path=pg_catalog'"
    with connect(dsn, timeout_ms=12_345) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("pg_catalog",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("12345ms",)
        assert conn.info.get_parameters()["connect_timeout"] == "7"


@pytest.mark.parametrize(
    ("sql", "shown"),
    [
        ("ALTER ROLE app PASSWORD 'hunter2pw'", "ALTER ROLE app PASSWORD '***'"),
        ("create role x login password 'a''b'", "create role x login password '***'"),
        ("SELECT crypt('hunter2pw', gen_salt('bf'))", "SELECT crypt('***', gen_salt('bf'))"),
        ("SELECT 'password' AS kind, $1", "SELECT 'password' AS kind, $1"),
    ],
)
def test_statement_texts_lose_their_password_literals(sql: str, shown: str) -> None:
    assert redact_sql(sql) == shown


def test_a_long_running_statement_is_shown_without_its_password(healthy_db: str) -> None:
    # pg_stat_activity (and pg_stat_statements, for utility statements) keep a statement's
    # text as sent: datagen's crypt('password123', ...) reached results.json.
    import threading

    from backend_checks.server_health import long_running

    def slow() -> None:
        with psycopg.connect(healthy_db) as other:
            other.execute("SELECT pg_sleep(2) /* crypt('hunter2pw', s) */")

    worker = threading.Thread(target=slow)
    worker.start()
    try:
        time.sleep(1.0)
        with psycopg.connect(healthy_db) as conn:
            check = long_running(conn, max_seconds=0.5)
    finally:
        worker.join()
    [found] = check.evidence["running"]
    assert "pg_sleep(2)" in found["query"] and "hunter2pw" not in found["query"]


def test_a_database_name_postgresql_would_cut_is_refused(pg_server: None) -> None:
    # 70 characters: the server made a database of the first 63 and datagen said it made
    # the 70-character one.
    from backend_checks.db import ensure_database
    from devicelab.errors import BadInput

    long_name = "dl_test_" + "x" * 62
    with pytest.raises(BadInput, match="is 70 bytes: PostgreSQL names hold 63 at most"):
        ensure_database(dsn_of(long_name))
    with psycopg.connect(dsn_of("postgres")) as conn:
        made = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'dl\\_test\\_xxxxxxxx%'"
        ).fetchone()
    assert made == (0,)
