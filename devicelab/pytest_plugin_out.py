"""The xdist workers' folders a plain session removes from its --devicelab-out
(devicelab/pytest_plugin.py uses it).

Under pytest-xdist each worker writes its results into ``DIR/gw0``, ``DIR/gw1``, ...; a
later session without xdist writes into ``DIR`` itself. Left there, the old worker folders
read as part of the new run (a CI job that uploads ``DIR`` shipped both). Only a folder
devicelab can prove is its own goes: named ``gw<N>``, with a results.json, and nothing in
it but the files a devicelab run writes; a folder another run is writing in (its lock
held) stays.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from devicelab.pytest_plugin_checks import WORKER_FOLDER

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["remove_stale_workers"]


def remove_stale_workers(out: Path) -> list[Path]:
    """Remove the xdist worker folders of an earlier session from ``out``: each
    ``gw<N>`` folder holding a results.json and only devicelab's own files. Returns the
    folders removed; what cannot be removed stays, and nothing raises."""
    from devicelab.errors import BadInput
    from devicelab.records import LOCK_FILE, claim_out
    from devicelab.report import FILE_NAMES
    from devicelab.samplers.log import SAMPLES_FILE

    ours = {*FILE_NAMES.values(), SAMPLES_FILE, LOCK_FILE}
    removed: list[Path] = []
    for folder in sorted(out.glob("gw*")):
        if not WORKER_FOLDER.fullmatch(folder.name) or folder.is_symlink():
            continue
        if not folder.is_dir():
            continue
        files = list(folder.iterdir())
        names = {path.name for path in files}
        if "results.json" not in names or not names <= ours:
            continue  # not provably devicelab's: someone's own files are in it
        if any(path.is_symlink() or not path.is_file() for path in files):
            continue
        try:
            with claim_out(folder):  # refused while another run writes there
                for path in files:
                    if path.name != LOCK_FILE:
                        path.unlink(missing_ok=True)
        except (BadInput, OSError):
            continue
        with contextlib.suppress(OSError):
            folder.rmdir()
            removed.append(folder)
    return removed
