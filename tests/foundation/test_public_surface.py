"""The public surface is explicit and importing devicelab has no heavy side effects."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

PUBLIC_MODULES = [
    "devicelab",
    "devicelab.models",
    "devicelab.errors",
    "devicelab.config",
    "devicelab.targets",
    "devicelab.doctor",
    "devicelab.pytest_plugin",
    "devicelab.platforms.android",
    "devicelab.platforms.ios",
    "devicelab.testing.background",
    "devicelab.testing.adb_server",
    "devicelab.testing.fake_adbd",
    "devicelab.testing.fake_usbmuxd",
    "devicelab.testing.upstream",
    "devicelab.testing.standins",
    "devicelab.testing.fake_lockdownd",
    "devicelab.testing.fake_webinspector",
    "devicelab.farm",
    "devicelab.lab_phone",
    "devicelab.platforms.ios_device",
    "devicelab.console",
    "devicelab.interrupts",
    "devicelab.journal",
]
HEAVY = ["mitmproxy", "playwright", "appium", "selenium", "locust", "gevent", "psycopg", "rich"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    # Sorted as ruff sorts __all__ (RUF022): CONSTANTS first, then the rest.
    isort_style = sorted(exported, key=lambda n: (not n.isupper(), n))
    assert exported in (sorted(exported), isort_style) or name == "devicelab.models"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"


def test_importing_the_cli_loads_nothing_heavy() -> None:
    code = (
        "import sys, json, devicelab, devicelab.cli, devicelab.models, devicelab.config;"
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert not [m for m in HEAVY if m in loaded]


def test_every_error_has_an_exit_code_of_the_contract() -> None:
    from devicelab import errors

    classes = [getattr(errors, name) for name in errors.__all__ if name[0].isupper()]
    assert len(classes) == 15
    for cls in classes:
        assert cls.exit_code in (2, 3), cls.__name__
    assert errors.ConfigError("x").exit_code == 2
    assert errors.BackendUnavailable("x").exit_code == 3
