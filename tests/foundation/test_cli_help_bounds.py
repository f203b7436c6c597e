"""`--help` states the bounds a command enforces (an outside tester: `backend datagen
--help` showed `--messages [x>=0]` and `--skew [x>=1]`, then refused 100000001 and 101),
and the URL `backend load --url` takes (its help said "/rest/v1, /auth/v1", a URL it
refuses)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from backend_checks.datagen import DatagenParams


def _help(*command: str) -> str:
    argv = [sys.executable, "-m", "devicelab", *command, "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("option", "field"),
    [("--messages", "messages"), ("--users", "users"), ("--conversations", "conversations"),
     ("--unread", "unread"), ("--skew", "skew"), ("--days", "days"), ("--seed", "seed")],
)  # fmt: skip
def test_datagen_help_shows_the_upper_bound_it_enforces(option: str, field: str) -> None:
    text = " ".join(_help("backend", "datagen").split())  # the option's help may wrap
    line = re.search(re.escape(option) + r" <\w+ range> [^\]]*\]", text)
    assert line is not None, text
    shown = re.search(r"<=x<=([0-9.e+]+)", line.group())
    assert shown is not None, line.group()
    bounds = {type(m).__name__: m for m in DatagenParams.model_fields[field].metadata}
    le = bounds["Le"].le if "Le" in bounds else bounds["Lt"].lt - 1
    assert float(shown.group(1)) == float(le), line


def test_load_help_asks_for_the_base_url() -> None:
    text = " ".join(_help("backend", "load").split())
    assert "the project's base URL (https://<ref>.supabase.co)" in text, text
    assert "a Supabase API URL (/rest/v1, /auth/v1)" not in text
