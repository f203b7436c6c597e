"""Fixtures of the report tests: a hand-written results.json and the lab's targets."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devicelab.config import load_targets
from devicelab.models import Results, TargetBook
from devicelab.report import load_results

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def results_path() -> Path:
    """A device run on pixel-7 over 4g: every status, targets, samples, three series."""
    return DATA / "results.json"


@pytest.fixture
def results(results_path: Path) -> Results:
    return load_results(results_path)


@pytest.fixture
def raw(results_path: Path) -> dict[str, Any]:
    """The fixture as plain JSON, for tests that bend it."""
    data: dict[str, Any] = json.loads(results_path.read_text())
    return copy.deepcopy(data)


@pytest.fixture(scope="session")
def book() -> TargetBook:
    return load_targets(ROOT / "profiles" / "targets.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicelab", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli("report", path, ...)``: the devicelab command in a subprocess, from the
    checkout; its CompletedProcess."""
    return _cli
