"""The samplers' public surface is explicit, and importing them loads no device library."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

MODULES = [
    "devicelab.samplers",
    "devicelab.samplers.android",
    "devicelab.samplers.ios",
    "devicelab.samplers.web",
    "devicelab.samplers.run",
    "devicelab.scenarios.memory_leak",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_are_sorted(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n))
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"


def test_importing_the_samplers_loads_no_device_library() -> None:
    code = (
        "import sys, json, devicelab.samplers.android, devicelab.samplers.ios,"
        " devicelab.samplers.web; print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    heavy = ["adbutils", "pymobiledevice3", "playwright", "psutil", "mitmproxy", "locust"]
    assert not [m for m in heavy if m in loaded]
