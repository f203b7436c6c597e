"""A URL DSN whose scheme is missing or mistyped still hides its password (real CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend_checks.db import connect, password_of, redact
from devicelab.errors import BackendUnavailable

#: Each form libpq cannot read as a URL: it tries key=value and quotes the DSN back whole.
BARE = [
    "postgres:s3cretpw@127.0.0.1:5432/fixd_x",
    "postgresql//postgres:s3cretpw@127.0.0.1:5432/fixd_x",
    "postgresql:/postgres:s3cretpw@127.0.0.1:5432/fixd_x",
    "postgresql:postgres:s3cretpw@127.0.0.1:5432/fixd_x",
    "//postgres:s3cretpw@127.0.0.1:5432/fixd_x",
    "host=127.0.0.1 postgres:s3cretpw@127.0.0.1:5432/fixd_x",
]


@pytest.mark.parametrize("dsn", BARE)
def test_a_password_behind_no_well_formed_scheme_is_hidden(dsn: str) -> None:
    assert password_of(dsn) is not None and "s3cretpw" in password_of(dsn)  # type: ignore[operator]
    for text in (dsn, f'missing "=" after "{dsn}" in connection info string'):
        assert "s3cretpw" not in redact(text, dsn)
        assert "s3cretpw" not in redact(text)  # the form alone gives it away
        assert "***@127.0.0.1" in redact(text)


def test_a_password_with_a_space_is_hidden_where_libpq_cut_it() -> None:
    dsn = "postgres:s3cr etpw@127.0.0.1:5432/fixd_x"
    assert password_of(dsn) == "s3cr etpw"
    with pytest.raises(BackendUnavailable) as caught:
        connect(dsn)  # libpq quotes back "postgres:s3cr", the piece before the space
    assert "s3cr" not in caught.value.one_line() and "etpw" not in caught.value.one_line()


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://bob@db.example:5432/app?application_name=me@lab",
        "host=db.example:5432 user=me@corp dbname=app",
        "mail bob@example.com at 12:30",
    ],
)
def test_text_without_a_password_is_left_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("dsn", [*BARE, "postgres:s3cr etpw@127.0.0.1:5432/fixd_x"])
@pytest.mark.parametrize("command", ["check", "datagen"])
def test_the_cli_never_prints_the_password_of_a_mangled_url(
    dsn: str, command: str, tmp_path: Path
) -> None:
    args = ["--out", str(tmp_path)] if command == "check" else ["--messages", "10"]
    proc = subprocess.run(
        [sys.executable, "-m", "devicelab", "backend", command, "--dsn", dsn, "--allow-writes",
         *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "s3cretpw" not in out and "s3cr" not in out, out
    assert proc.returncode == 3 and "Traceback" not in out, out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("devicelab: error: invalid DSN"), out
