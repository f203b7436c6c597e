"""``backend check`` and ``backend load`` take the API's URL under either spelling:
``--supabase-url`` (check's) and ``--url`` (load's) are one option on both commands, so
a malformed URL is refused alike (exit 2, one line) whichever name carried it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

KEY = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJvbGUiOiJhbm9uIn0.c2ln"
BAD_URL = "http://127.0.0.1:9/rest/v1/"  # the endpoint, not the base: refused before any request


def _devicelab(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "devicelab", "backend", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)


def _check(option: str) -> subprocess.CompletedProcess[str]:
    return _devicelab("check", option, BAD_URL, "--anon-key", KEY,
                      "--test-email", "t@example.com", "--test-password", "pw")  # fmt: skip


def _load(option: str) -> subprocess.CompletedProcess[str]:
    return _devicelab("load", option, BAD_URL, "--anon-key", KEY,
                      "--users", "1", "--duration", "1s", "--mix", "read")  # fmt: skip


@pytest.mark.parametrize(
    ("run", "canonical", "alias"),
    [(_check, "--supabase-url", "--url"), (_load, "--url", "--supabase-url")],
    ids=["check", "load"],
)
def test_the_other_commands_spelling_is_refused_with_the_same_line(
    run: Callable[[str], subprocess.CompletedProcess[str]], canonical: str, alias: str
) -> None:
    given, aliased = run(canonical), run(alias)
    assert given.returncode == 2, given.stderr
    assert "that is the /rest/v1 endpoint" in given.stderr
    assert given.stderr.count("\n") == 1 and "Traceback" not in given.stderr
    assert (aliased.returncode, aliased.stderr) == (given.returncode, given.stderr)


@pytest.mark.parametrize(
    ("command", "names"),
    [("check", "--supabase-url, --url"), ("load", "--url, --supabase-url")],
)
def test_the_help_shows_both_spellings(command: str, names: str) -> None:
    shown = _devicelab(command, "--help").stdout
    assert names in shown, shown
