"""Importing ``backend check``'s modules loads neither aiohttp (~300 ms) nor psycopg: they
load inside the functions that talk to an API or a database (STYLE.md, habit 10)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = {"aiohttp", "psycopg", "psycopg_pool"}


@pytest.mark.parametrize(
    "module",
    [
        "backend_checks.check",
        "backend_checks.api_checks",
        "backend_checks.supabase_auth",
        "backend_checks.realtime_checks",
        "backend_checks.storage_checks",
    ],
)
def test_importing_loads_no_http_client_or_database_driver(module: str) -> None:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert sorted(HEAVY & set(json.loads(done.stdout))) == []
