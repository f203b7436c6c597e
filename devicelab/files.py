"""Files that several devicelab processes may make at once (a farm's runs, two servers on
one state folder, test workers): written whole, and made under a lock when only one of
them may make it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["locked_folder", "write_private"]


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner alone (mode 0600) from the start:
    a spec file may hold a DSN's password, a secret file is one. The text goes to a 0600
    temporary file next to ``path``, is synced, then replaces it, so no reader ever sees it
    looser or half written (an existing looser file is replaced, not rewritten). Returns
    ``path``; raises OSError (a failing replace names ``path``, not the temporary file)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        try:
            Path(temporary).replace(path)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def locked_folder(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (an existing directory; ``flock`` on it, so no
    lock file is left) for the ``with`` block; it waits for the holder before it. Raises
    OSError when the folder cannot be opened."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and the lock with it
