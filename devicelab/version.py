"""Which devicelab made a result: the release, and in a git checkout the commit.

``run.devicelab_version`` in results.json is ``0.1.0`` from an installed wheel and
``0.1.0+g1a2b3c4`` (``.dirty`` when tracked files differ from that commit) when devicelab
runs from its own checkout, as after ``./dev/setup``, so two runs' figures can be traced
to the code that measured them. ``devicelab --version`` prints the same.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from devicelab import __version__

__all__ = ["full_version"]

#: The folder above the package: a devicelab checkout when it holds .git.
_CHECKOUT = Path(__file__).resolve().parent.parent


@functools.cache
def full_version() -> str:
    """``__version__``, with ``+g<commit>[.dirty]`` (PEP 440 local version) when the package
    runs from a git checkout of devicelab and git answers within 5 s. Never raises."""
    commit = _checkout_commit(_CHECKOUT)
    return f"{__version__}+{commit}" if commit else __version__


def _checkout_commit(root: Path) -> str | None:
    """``g<short commit>`` and ``.dirty`` for the git checkout at ``root``; None when root
    is no checkout (only a .git right there counts: a virtualenv inside a user's own
    repository must not report that repository), git is missing or fails."""
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        return None
    try:
        head = _git(git, root, "rev-parse", "--short=7", "HEAD")
        changed = _git(git, root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if not head:
        return None
    return f"g{head}.dirty" if changed else f"g{head}"


def _git(git: str, root: Path, *args: str) -> str:
    """What ``git -C root args`` prints, stripped; raises CalledProcessError on failure."""
    done = subprocess.run(
        # A checkout owned by another user (root running a user's clone) is "dubious
        # ownership" to git >= 2.35.2: this read-only look is safe, allowed for this call.
        [git, "-c", f"safe.directory={root}", "-C", str(root), *args],
        capture_output=True, text=True, timeout=5, check=True,
        # No index refresh written back: a run must not take .git/index.lock from a
        # developer's commit in the same checkout.
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    )  # fmt: skip
    return done.stdout.strip()
