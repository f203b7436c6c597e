"""Which devicelab made a result: the release, plus the commit when run from a checkout."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from devicelab import __version__
from devicelab.version import _checkout_commit

ROOT = Path(__file__).resolve().parents[2]


#: git's identity for the commits of these tests, and nothing of the user's config.
_GIT_ENV = {"PATH": "/usr/bin:/bin", "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, env={**_GIT_ENV, "HOME": str(repo)})  # fmt: skip
    return done.stdout.strip()


def test_a_checkout_names_its_commit_and_says_when_tracked_files_changed(tmp_path: Path) -> None:
    repo = tmp_path / "devicelab"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "lab.py").write_text("x = 1\n")
    _git(repo, "add", "lab.py")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "--short=7", "HEAD")
    assert _checkout_commit(repo) == f"g{head}"
    (repo / "notes.txt").write_text("untracked files are not the code that measured\n")
    assert _checkout_commit(repo) == f"g{head}"
    (repo / "lab.py").write_text("x = 2\n")
    assert _checkout_commit(repo) == f"g{head}.dirty"


def test_a_folder_inside_someone_elses_repository_is_no_checkout(tmp_path: Path) -> None:
    """A virtualenv inside the user's own repository: its site-packages is no devicelab
    checkout, and that repository's commit must not be reported as devicelab's."""
    repo = tmp_path / "their-app"
    (repo / ".venv" / "lib").mkdir(parents=True)
    _git(repo, "init", "-q")
    assert _checkout_commit(repo / ".venv" / "lib") is None
    assert _checkout_commit(tmp_path) is None  # no repository at all


def test_version_prints_the_release_and_this_checkouts_commit() -> None:
    done = subprocess.run([sys.executable, "-m", "devicelab", "--version"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    head = _git(ROOT, "rev-parse", "--short=7", "HEAD")
    pattern = rf"devicelab {re.escape(__version__)}\+g{head}(\.dirty)?"
    assert re.fullmatch(pattern, done.stdout.strip()), done.stdout
