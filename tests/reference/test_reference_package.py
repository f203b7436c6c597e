"""The reference package's public surface is explicit, and importing it is cheap."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import backend_checks.reference as _package

#: Every module of the package (found, not listed: a new one is checked too), and the CLI.
MODULES = [
    _package.__name__,
    *(f"{_package.__name__}.{m.name}" for m in pkgutil.iter_modules(_package.__path__)),
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
