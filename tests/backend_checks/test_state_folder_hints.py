"""The hint of an unusable state folder names the default of the thing that failed, for
this user (an outside tester: the managed cluster's hint named the journal's default,
~/.local/state/devicelab, while the cluster's is /var/lib/devicelab for root and
~/.local/share/devicelab for others)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend_checks.managed import ManagedPostgres
from devicelab.errors import EnvironmentProblem
from devicelab.journal import Journal


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A folder that cannot be made: its parent is a regular file."""
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "state"


def test_the_clusters_hint_names_the_clusters_default(blocked: Path) -> None:
    with pytest.raises(EnvironmentProblem) as caught:
        ManagedPostgres(state_dir=blocked).ensure()
    hint = caught.value.hint or ""
    default = "/var/lib/devicelab" if os.geteuid() == 0 else f"{Path.home()}/.local/share/devicelab"
    assert f"the cluster's default, when it is unset: {default})" in hint, hint
    assert ".local/state" not in hint


def test_the_journals_hint_names_the_journals_default_for_this_user(blocked: Path) -> None:
    with pytest.raises(EnvironmentProblem) as caught:
        Journal(blocked / "journal.jsonl").record("test", "nothing")
    hint = caught.value.hint or ""
    assert f"the journal's default, when it is unset: {Path.home()}/.local/state/devicelab)" in hint
