"""Writing report files: each whole or not at all, and a set of them together.

A report goes to a temporary file beside its target, then a rename; a set (``--out DIR``'s
four files) is staged whole before the first rename, so a failure leaves the old set. A
symlink is followed (its target is replaced, the link stays); a FIFO or a device
(``-o /dev/stdout``) is written through, as a shell redirection would, never replaced by
a regular file. An existing file keeps its permissions.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from devicelab.errors import BadInput, EnvironmentProblem

__all__ = ["write_text_atomic", "write_texts"]

#: Failures of the path the user gave (exit 2); anything else is the machine's (exit 3).
_BAD_PATH = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS}


def _failed(path: Path, exc: OSError) -> BadInput | EnvironmentProblem:
    reason = exc.strerror or str(exc)
    if exc.errno in _BAD_PATH:
        return BadInput(f"{path}: cannot write ({reason})", hint="check the path")
    return EnvironmentProblem(
        f"{path}: cannot write ({reason})", hint="free some space or check the disk"
    )


class _Target:
    """Where the text of ``path`` really goes, and how."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            st: os.stat_result | None = path.stat()  # through symlinks and /proc's fd links
        except OSError:
            st = None
        # A symlink's target is replaced, not the link (a report linked from elsewhere). A
        # special file is opened by the path given: /dev/stdout's chain ends in
        # /proc/self/fd/1, whose link text ("pipe:[...]") is no path.
        special = st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)
        self.real = path if special else Path(os.path.realpath(path))
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise BadInput(f"{path}: is a folder", hint="name a file, or move the folder away")
        if not self.real.parent.is_dir():
            # A dangling symlink: the folder missing is the one it points into.
            parent = self.real.parent if path.is_symlink() else path.parent
            raise BadInput(
                f"{parent}: no such folder",
                hint=f"create it, or write {path.name} elsewhere",
            )
        #: A FIFO, a terminal or a device: written through, not replaced.
        self.special = special
        self.mode = stat.S_IMODE(st.st_mode) if st is not None else None
        self.temp: Path | None = None

    def stage(self, text: str) -> None:
        """Write the text to a temporary file beside the target (a special target: now)."""
        if self.special:
            try:
                with self.real.open("w", encoding="utf-8", newline="\n") as handle:
                    handle.write(text)
            except OSError as exc:
                raise _failed(self.path, exc) from exc
            return
        try:
            fd, name = tempfile.mkstemp(
                prefix=f".{self.real.name}.", suffix=".tmp", dir=self.real.parent
            )
            self.temp = Path(name)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            # mkstemp makes 0600: a new report is as readable as any file the user makes,
            # a replaced one keeps the permissions it had.
            if self.mode is None:
                umask = os.umask(0)
                os.umask(umask)
                self.temp.chmod(0o666 & ~umask)
            else:
                self.temp.chmod(self.mode)
        except OSError as exc:
            self.discard()
            raise _failed(self.path, exc) from exc

    def commit(self) -> None:
        if self.temp is None:
            return
        try:
            self.temp.replace(self.real)
        except OSError as exc:
            self.discard()
            raise _failed(self.path, exc) from exc
        self.temp = None

    def discard(self) -> None:
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None


def write_texts(texts: dict[Path, str]) -> None:
    """Write each text to its path, all or none: every path is checked and every text
    staged before the first rename (renames in one folder do not fail for space).

    Raises BadInput for a bad path (a missing folder, a folder in the file's place, no
    permission), EnvironmentProblem for the machine's failures (a full disk); no
    temporary file is left behind, and no target changed, either way.
    """
    targets = [(_Target(path), text) for path, text in texts.items()]
    try:
        for target, text in targets:
            target.stage(text)
        for target, _ in targets:
            target.commit()
    finally:
        for target, _ in targets:
            target.discard()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` so that it is either the old file or the whole
    new one (a FIFO or a device is written through).

    Returns the path. Raises BadInput when the folder is missing, ``path`` is a folder or
    permission is denied; EnvironmentProblem for other failures (a full disk). Either way
    no temporary file is left behind.
    """
    path = Path(path)
    write_texts({path: text})
    return path
