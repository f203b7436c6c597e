"""The reference package's public surface is explicit, and importing it is cheap."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

MODULES = [
    "backend_checks.reference",
    "backend_checks.reference.app",
    "backend_checks.reference.auth",
    "backend_checks.reference.auth_admin",
    "backend_checks.reference.catalog",
    "backend_checks.reference.context",
    "backend_checks.reference.db",
    "backend_checks.reference.errors",
    "backend_checks.reference.identity",
    "backend_checks.reference.parse",
    "backend_checks.reference.query",
    "backend_checks.reference.rest",
    "backend_checks.reference.serve",
    "backend_checks.reference.server",
    "backend_checks.reference.storage",
    "backend_checks.reference.storage_buckets",
    "backend_checks.reference.storage_files",
    "backend_checks.reference.storage_transfer",
    "devicelab.cli.serve",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_once(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(set(exported)) == len(exported)  # order: ruff's RUF022 (isort style)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"


def test_importing_the_package_loads_no_server_code() -> None:
    code = (
        "import sys, json, backend_checks.reference, devicelab.cli.serve;"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert not {"aiohttp", "psycopg", "psycopg_pool", "jwt"} & loaded
