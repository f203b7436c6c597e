"""A started web lab session over a managed cluster of its own, for tests that measure."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from devicelab.lab import Lab, LabSession, app_build_dir


@contextlib.contextmanager
def web_session(network: str, out: Path, label: str) -> Iterator[LabSession]:
    """A web lab on ``network`` with users A and B signed in, its state (and managed
    cluster) in a folder of its own under /tmp named for ``label``; the cluster stopped and
    the folder removed after."""
    assert (app_build_dir() / "index.html").is_file(), "run ./dev/setup: it builds the app"
    # Not under pytest's tmp_path: as root, the postgres user must traverse every parent.
    state = Path(tempfile.mkdtemp(prefix=f"dl-{label}-", dir="/tmp"))
    state.chmod(0o711)
    saved = os.environ.get("DEVICELAB_STATE")
    os.environ["DEVICELAB_STATE"] = str(state)
    try:
        with Lab("web", network).session(out) as started:
            yield started
    finally:
        stop = [sys.executable, "-m", "devicelab", "backend", "stop"]
        subprocess.run(stop, env={**os.environ}, capture_output=True, timeout=120, check=False)
        if saved is None:
            os.environ.pop("DEVICELAB_STATE", None)
        else:
            os.environ["DEVICELAB_STATE"] = saved
        shutil.rmtree(state, ignore_errors=True)
