"""A user's own profiles/targets.yaml ($DEVICELAB_HOME) under ``backend check --dsn``:
a missing backend row and a broken file are each one line, exit 2, naming the file and
what to fix (DESIGN: never a traceback for 2), and a broken file is never passed over
for the query files' own targets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backend_checks.query_checks import query_check
from backend_checks.suite import QueryRun, load_suite
from devicelab.errors import ConfigError
from devicelab.targets import judge

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "profiles" / "targets.yaml").read_text(encoding="utf-8")


def _lab(tmp_path: Path, text: str) -> Path:
    """A lab folder for $DEVICELAB_HOME holding ``text`` as profiles/targets.yaml."""
    (tmp_path / "lab" / "profiles").mkdir(parents=True)
    (tmp_path / "lab" / "profiles" / "targets.yaml").write_text(text, encoding="utf-8")
    return tmp_path / "lab"


def _without_row(check: str) -> str:
    """The shipped targets.yaml without the backend row of ``check``."""
    row = re.compile(r"^  - \{check: " + check + r", platform: backend,.*\n(?:     .*\n)*", re.M)
    text, removed = row.subn("", SHIPPED)
    assert removed == 1
    return text


def _broken() -> str:
    """The shipped targets.yaml with a typo in message_fetch's backend row."""
    before = '{check: message_fetch, platform: backend, op: "<", value: 50,'
    assert before in SHIPPED
    return SHIPPED.replace(before, before.replace("value:", "valeu:"))


def _check(dsn: str, lab: Path, out: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "devicelab", "backend", "check", "--dsn", dsn,
            "--runs", "2", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "DEVICELAB_HOME": str(lab)}
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)


def test_a_missing_backend_row_is_one_line_naming_the_file_and_the_row(
    healthy_db: str, tmp_path: Path
) -> None:
    lab = _lab(tmp_path, _without_row("table_sizes"))
    done = _check(healthy_db, lab, tmp_path / "out")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(lab / "profiles" / "targets.yaml") in done.stderr
    assert "no backend target for table_sizes" in done.stderr
    assert "add a backend row for table_sizes to profiles/targets.yaml" in done.stderr


def test_a_missing_backend_row_is_found_before_any_work(empty_db: str, tmp_path: Path) -> None:
    # It was found after the data load, the suite and the API checks: on an empty database
    # with --allow-writes, the seeding happened first.
    lab = _lab(tmp_path, _without_row("table_sizes"))
    argv = [sys.executable, "-m", "devicelab", "backend", "check", "--dsn", empty_db,
            "--allow-writes", "--out", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "DEVICELAB_HOME": str(lab)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no backend target for table_sizes" in done.stderr
    import psycopg

    with psycopg.connect(empty_db) as conn:
        row = conn.execute("SELECT to_regclass('public.messages')").fetchone()
    assert row == (None,), "the database was seeded before the row was missed"


def test_a_broken_targets_file_is_one_line_naming_its_line(healthy_db: str, tmp_path: Path) -> None:
    lab = _lab(tmp_path, _broken())
    done = _check(healthy_db, lab, tmp_path / "out")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "targets.yaml:" in done.stderr and "valeu" in done.stderr, done.stderr


def test_a_query_check_does_not_pass_over_a_broken_targets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The query checks swallowed the ConfigError and judged message_fetch by the query
    # file's own target, whatever the user's file said.
    (spec,) = load_suite(ids=["message_fetch"])
    run = QueryRun(id=spec.id, params={}, samples_ms=[1.0, 2.0, 3.0])
    monkeypatch.setenv("DEVICELAB_HOME", str(_lab(tmp_path, _broken())))
    with pytest.raises(ConfigError, match="valeu"):
        query_check(spec, run, judge)
    # A file without the query's row is no broken file: the query file's target holds.
    monkeypatch.setenv("DEVICELAB_HOME", str(_lab(tmp_path / "b", _without_row("message_fetch"))))
    check = query_check(spec, run, judge)
    assert check.status == "pass" and check.target is not None
    assert check.target.source == spec.target.source


@pytest.mark.parametrize("check", ["message_fetch", "table_sizes"])
def test_a_row_in_units_the_check_cannot_compare_is_refused_before_any_work(
    check: str, empty_db: str, tmp_path: Path
) -> None:
    # message_fetch in "users" ended in a traceback after the suite was timed
    # (ValueError: cannot compare ms with users).
    row = re.compile(r"(\{check: " + check + r", platform: backend,[^}]*?unit: )(\w+|\"%\")")
    text, changed = row.subn(r"\1users", SHIPPED)
    assert changed == 1
    argv = [sys.executable, "-m", "devicelab", "backend", "check", "--dsn", empty_db,
            "--allow-writes", "--out", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "DEVICELAB_HOME": str(_lab(tmp_path, text))}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"the {check} row's unit 'users' cannot be compared" in done.stderr
    # It said only "targets.yaml:", when several places may hold one.
    lab_file = Path(env["DEVICELAB_HOME"]) / "profiles" / "targets.yaml"
    assert done.stderr.startswith(f"devicelab: error: {lab_file}: the {check} row"), done.stderr
