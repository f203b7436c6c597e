"""Spec files hold a DSN's password: they are readable by their owner alone (0600) from
their creation, however they are written (write_spec, the HTTP spec, a process's spec)."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from backend_checks.datagen import DatagenParams, generate
from backend_checks.load import LoadOptions
from backend_checks.load.models import Identity
from backend_checks.load.runner import spec_file, write_spec
from devicelab.files import write_private

_ADMIN = os.environ.get("DEVICELAB_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")


@pytest.fixture(scope="module")
def fj_db() -> Iterator[str]:
    """A small generated database of ours (fj_...) on the local server, dropped after."""
    name = f"fj_spec_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(f"{_ADMIN} dbname=postgres", autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL at {_ADMIN!r}: {exc}".splitlines()[0])
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        try:
            with psycopg.connect(f"{_ADMIN} dbname={name}") as conn:
                params = DatagenParams(messages=500, users=64, conversations=40)
                generate(conn, params, allow_writes=True)
            yield f"{_ADMIN} dbname={name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that lets every file be read by all (0644 is what write_text gave)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_spec_is_private(fj_db: str, tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "spec.json"
    dsn = f"{fj_db} password=SpecPw_123"
    write_spec(dsn, LoadOptions(mix="read", per_user_rate=1, duration_s=5), 2, path)
    assert "SpecPw_123" in path.read_text()
    assert _mode(path) == 0o600


def test_a_readable_spec_file_left_before_is_replaced_private(
    tmp_path: Path, open_umask: None
) -> None:
    path = tmp_path / "spec.json"
    path.write_text("old")
    path.chmod(0o644)
    ident = [Identity(user_id="u", email="a@example.com")]
    spec_file(path, LoadOptions(), 1, {"read": 1}, ident, api_url="http://127.0.0.1:1")
    assert _mode(path) == 0o600
    assert "127.0.0.1" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]  # no temporary left


def test_the_file_is_never_readable_by_others_while_written(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every file created on the way (a temporary one too) is 0600 when it is opened.
    seen: list[int] = []
    real_open = os.open

    def watching(name: str, flags: int, mode: int = 0o777, *a: object, **k: object) -> int:
        fd = real_open(name, flags, mode, *a, **k)  # type: ignore[arg-type]
        if flags & os.O_CREAT:
            seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return fd

    monkeypatch.setattr(os, "open", watching)
    write_private(tmp_path / "spec.json", "dsn password=x")
    assert seen and all(m == 0o600 for m in seen), seen
    assert _mode(tmp_path / "spec.json") == 0o600
