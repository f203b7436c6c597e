"""Passwords in statement texts (pg_stat_statements keeps utility statements verbatim)
never reach a check's evidence, in any of PostgreSQL's quotings."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import psycopg
import pytest

from backend_checks import server_health
from backend_checks.db import redact_sql
from tests.linear_time import assert_linear

#: Each statement as PostgreSQL stores it, and its secret.
STATEMENTS = [
    ("ALTER ROLE fj_r PASSWORD E'EscPw_111'", "EscPw_111"),
    ("ALTER ROLE fj_r PASSWORD E'Esc\\'Pw_112'", "Pw_112"),
    ("ALTER ROLE fj_r PASSWORD $$DolPw_222$$", "DolPw_222"),
    ("ALTER ROLE fj_r PASSWORD $fj$TagPw_223$fj$", "TagPw_223"),
    ("ALTER ROLE fj_r PASSWORD'NoSpPw_333'", "NoSpPw_333"),
    ("ALTER ROLE fj_r PASSWORD 'Dbl''Pw_334'", "Pw_334"),
    ("ALTER ROLE fj_r WITH ENCRYPTED PASSWORD 'EncPw_444'", "EncPw_444"),
    ("CREATE USER fj_u PASSWORD 'UsrPw_555'", "UsrPw_555"),
    (
        "CREATE SUBSCRIPTION fj_s CONNECTION 'host=127.0.0.1 password=SubPw_777 dbname=x'"
        " PUBLICATION fj_p WITH (connect = false)",
        "SubPw_777",
    ),
    ("ALTER SUBSCRIPTION fj_s CONNECTION 'password=''Sub Pw_778'' host=h'", "Pw_778"),
    (
        "CREATE USER MAPPING FOR CURRENT_USER SERVER fj_srv OPTIONS (user 'u', password"
        " 'MapPw_888')",
        "MapPw_888",
    ),
    ("SELECT dblink_connect('host=h password=LinkPw_999')", "LinkPw_999"),
]


@pytest.mark.parametrize(("sql", "secret"), STATEMENTS)
def test_every_quoting_of_a_password_is_masked(sql: str, secret: str) -> None:
    shown = redact_sql(sql)
    assert secret not in shown and "***" in shown, shown


def test_text_that_only_mentions_a_password_is_kept() -> None:
    for sql in ("SELECT 'password' AS kind, $1", "ALTER ROLE fj_r PASSWORD NULL"):
        assert redact_sql(sql) == sql


def test_masking_adversarial_sql_grows_linearly() -> None:
    for piece, count in (
        ("password '", 12_500),
        ("password E'\\", 12_500),
        ("password $a", 12_500),
        ("password=''", 12_500),
        ("password $$", 12_500),
        ("'", 125_000),
    ):
        assert_linear(redact_sql, piece, count)


def test_slow_queries_evidence_holds_no_password(
    load_cluster: Callable[[str], contextlib.AbstractContextManager[str]],
) -> None:
    with load_cluster("fjsecret") as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute("CREATE ROLE fj_r")
        conn.execute("CREATE FOREIGN DATA WRAPPER fj_w")
        conn.execute("CREATE SERVER fj_srv FOREIGN DATA WRAPPER fj_w")
        for sql, _ in STATEMENTS:
            if "dblink" in sql:
                continue  # needs the extension; its text is checked above
            conn.execute(sql)  # type: ignore[arg-type]
        conn.execute("ALTER SUBSCRIPTION fj_s SET (slot_name = NONE)")
        conn.execute("DROP SUBSCRIPTION fj_s")
        check = server_health.slow_queries(conn)
    evidence = json.dumps(check.evidence)
    assert "PASSWORD" in evidence, evidence  # the statements are there ...
    leaked = [secret for sql, secret in STATEMENTS if secret in evidence]
    assert not leaked, leaked  # ... their passwords are not
