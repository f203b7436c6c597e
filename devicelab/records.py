"""The durable store of a run: every check is on disk as soon as it is measured.

:class:`RunRecord` keeps the run's Results and rewrites ``<out>/results.json`` atomically
after each check, so a run that is interrupted (Ctrl-C, a crash, a device that drops)
leaves every sample measured so far in a valid results.json (``finished_at`` null).
:meth:`RunRecord.finish` stamps the end and writes the reports next to it.

The samplers' readings are on disk in ``<out>/samples.jsonl`` as they come
(devicelab.samplers); a record that follows them (:meth:`RunRecord.follow`) rewrites
results.json's ``series`` from that file with each check, and at the finish. A record that
follows none (the run stopped while starting, or measured nothing) removes a previous
run's samples.jsonl when it writes: the folder holds one run's files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from devicelab.errors import BadInput
from devicelab.models import Check, Results, RunInfo, Series, TargetBook

__all__ = ["LOCK_FILE", "RunRecord", "SeriesSource", "check_writable", "claim_out"]

logger = logging.getLogger("devicelab.records")

#: Held (flock) in the out folder while a run writes there.
LOCK_FILE = ".devicelab.lock"


def check_writable(out_dir: Path, *, make: bool = True) -> None:
    """Prove results can be written in ``out_dir`` before a run starts anything: a bad
    --out is bad input, not a failure after minutes of work. With ``make`` the folder
    (and its parents) is made and a file written in it; without, nothing is created
    (the nearest existing folder must be writable). Either way none of the report names
    may be a folder. Raises BadInput (exit 2)."""
    from devicelab.report import FILE_NAMES

    def refuse(reason: str) -> BadInput:
        return BadInput(
            f"{out_dir}: cannot write results there ({reason})",
            hint="give --out a folder you may write to",
        )

    if make:
        if out_dir.exists() and not out_dir.is_dir():  # mkdir would say "File exists"
            raise refuse("it is a file, not a folder")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            # A name of its own: two runs checking one folder at once removed each
            # other's probe ("cannot write results there (No such file or directory)"),
            # where the second should have been told the first is writing there.
            fd, probe = tempfile.mkstemp(prefix=".devicelab-write-check-", dir=out_dir)
            os.close(fd)
            Path(probe).unlink()
        except OSError as exc:
            raise refuse(exc.strerror or str(exc)) from exc
    else:
        existing = out_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise refuse(f"{existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise refuse(f"no permission to write in {existing}")
    for name in FILE_NAMES.values():
        if (out_dir / name).is_dir():
            raise BadInput(
                f"{out_dir / name}: is a folder where the run writes its {name}",
                hint="move it away, or give --out another folder",
            )


@contextlib.contextmanager
def claim_out(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir`` for one run: another run given the same folder while this one
    writes there (another process, or this one) is refused, not left to interleave its
    results.json, samples and reports with ours. The lock file goes when the claim ends,
    so an empty folder stays empty. On a file system without locks the run goes on,
    unclaimed, with a warning. Raises BadInput (exit 2) when the folder is held."""
    path = out_dir / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise BadInput(f"{out_dir}: cannot write results there ({exc.strerror})",
                           hint="give --out a folder you may write to") from exc  # fmt: skip
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise BadInput(
                f"{out_dir}: another devicelab run is writing there"
                + (f" (pid {holder})" if holder.isdigit() else ""),
                hint="wait for it to end, or give --out another folder",
            ) from None
        except OSError as exc:  # ENOLCK (some network file systems): go on unclaimed
            os.close(fd)
            logger.warning("%s: cannot lock the folder (%s); two runs there would mix their "
                           "files", out_dir, exc.strerror)  # fmt: skip
            yield
            return
        try:
            ours = path.stat().st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            ours = False
        if ours:
            break
        os.close(fd)  # the run before removed it as we opened it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before the lock goes: the next run locks a file of its own
        os.close(fd)


class SeriesSource(Protocol):
    """Where a run's series come from (devicelab.samplers.RunSampling)."""

    def series(self) -> list[Series]:
        """Every series so far."""
        ...

    def stop(self) -> None:
        """Stop taking samples (idempotent, never raises)."""


class RunRecord:
    """The Results of one run, kept on disk in ``out_dir`` as they grow."""

    def __init__(self, run: RunInfo, out_dir: Path) -> None:
        self.results = Results(run=run)
        self.out_dir = out_dir
        self._sampling: SeriesSource | None = None
        self._others_dropped = False  # a previous run's samples.jsonl looked for (once)

    def follow(self, sampling: SeriesSource) -> None:
        """Take results.json's series from ``sampling`` with each check and at the finish
        (where it is stopped first, so the series end with the run)."""
        self._sampling = sampling

    def add(self, check: Check) -> None:
        """Record ``check`` and rewrite results.json. Raises BadInput when ``out_dir``
        cannot be written."""
        self.results = Results(
            run=self.results.run, checks=[*self.results.checks, check], series=self._series()
        )
        self._save()

    def finish(self, book: TargetBook | None = None) -> Results:
        """Stamp ``finished_at``; write results.json and the reports (their target matrix
        from ``book``); returns the Results."""
        self._write_set(book, finished_at=datetime.now(UTC))
        return self.results

    def stopped(self, book: TargetBook | None = None) -> None:
        """The run stopped before its end (Ctrl-C, an error): write the reports of what it
        measured next to its results.json (``finished_at`` stays null), so the folder is
        one run's, never this run's results.json beside the previous run's reports.
        Logs and never raises: the reason the run stopped is the error that counts."""
        try:
            self._write_set(book, finished_at=None)
        except Exception as exc:  # the run's own error is the one to report
            logger.warning("could not write the reports of the stopped run: %s", exc)

    def _write_set(self, book: TargetBook | None, finished_at: datetime | None) -> None:
        """Stop the sampling, take its series, write results.json and the reports."""
        from devicelab.report import write_all

        if self._sampling is not None:
            self._sampling.stop()
        run = self.results.run.model_copy(update={"finished_at": finished_at})
        self.results = Results(run=run, checks=self.results.checks, series=self._series())
        self._drop_other_samples()
        write_all(self.results, self.out_dir, book)

    def _drop_other_samples(self) -> None:
        """Without samplers of its own, a samples.jsonl in ``out_dir`` is a previous run's:
        remove it, or it reads as this run's beside this run's results.json. Once a
        record: the first write looks."""
        from devicelab.samplers.log import SAMPLES_FILE

        if self._sampling is not None or self._others_dropped:
            return
        self._others_dropped = True
        stale = self.out_dir / SAMPLES_FILE
        try:
            stale.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # the results still count: say what is left
            logger.warning("%s is a previous run's and could not be removed: %s",
                           stale, exc.strerror or exc)  # fmt: skip

    def _series(self) -> list[Series]:
        if self._sampling is None:
            return self.results.series
        return self._sampling.series()

    def _save(self) -> None:
        from devicelab.report import FILE_NAMES, write_text_atomic

        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(
                f"{self.out_dir}: cannot make the folder ({exc.strerror})", hint="check --out"
            ) from exc
        self._drop_other_samples()
        write_text_atomic(self.out_dir / FILE_NAMES["json"], self.results.to_json() + "\n")
