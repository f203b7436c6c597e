"""A durable journal of the changes devicelab makes to devices, so each can be undone.

Every change is written (and fsynced) *before* it is made, with what undoes it; once
undone, a second line marks it so. Undo happens on a normal exit and on Ctrl-C (``with
journal.session(undoers):``) and, after a crash or a kill, at the next start
(``journal.recover(undoers)``), newest change first. An undoer that fails is logged and the
others still run; the entry stays pending so the next start tries again.

    with Journal() as journal:                      # recovers what a crash left behind
        entry = journal.record("android.http_proxy", serial, {"previous": ":0"})
        make_the_change()
        ...                                         # undone on exit, Ctrl-C or next start

The file is JSON lines, by default ``$DEVICELAB_STATE/journal.jsonl`` (``DEVICELAB_STATE``
defaults to ``~/.local/state/devicelab``); an advisory lock keeps concurrent writers apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

__all__ = ["Entry", "Journal", "Undoer", "default_path"]

logger = logging.getLogger("devicelab.journal")


@dataclass(frozen=True)
class Entry:
    """One change: ``kind`` names its undoer, ``target`` the device, ``data`` what undoes it."""

    kind: str
    target: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)


Undoer = Callable[[Entry], None]


def default_path() -> Path:
    """The journal file: ``$DEVICELAB_STATE/journal.jsonl`` (~/.local/state/devicelab)."""
    root = os.environ.get("DEVICELAB_STATE") or "~/.local/state/devicelab"
    return Path(root).expanduser() / "journal.jsonl"


class Journal:
    """The journal file and the undo of what it holds (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        undoers: Mapping[str, Undoer] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.undoers: dict[str, Undoer] = dict(undoers or {})
        self._mine: list[str] = []  # ids recorded by this process, oldest first

    # --- writing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _append(self, line: dict[str, Any]) -> None:
        with self._locked() as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def record(self, kind: str, target: str, data: Mapping[str, Any] | None = None) -> Entry:
        """Write a change down before it is made; returns its entry.

        Raises OSError when the journal cannot be written (then make no change).
        """
        entry = Entry(kind=kind, target=target, data=dict(data or {}))
        self._append({"op": "change", **entry.__dict__})
        self._mine.append(entry.id)
        return entry

    def mark_undone(self, entry: Entry) -> None:
        """Note that ``entry`` has been undone (or needs no undo any more)."""
        self._append({"op": "undone", "id": entry.id, "at": time.time()})
        with contextlib.suppress(ValueError):
            self._mine.remove(entry.id)

    # --- reading and undoing ------------------------------------------------------------
    def pending(self) -> list[Entry]:
        """Changes recorded and not undone, oldest first (every process's)."""
        if not self.path.exists():
            return []
        changes: dict[str, Entry] = {}
        with self._locked() as handle:
            handle.seek(0)
            for line in handle:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line after a crash: the change was not made
                if item.get("op") == "change":
                    fields = {k: item[k] for k in ("kind", "target", "data", "id", "at", "pid")}
                    changes[item["id"]] = Entry(**fields)
                elif item.get("op") == "undone":
                    changes.pop(item.get("id"), None)
        return list(changes.values())

    def undo(self, entries: list[Entry]) -> list[tuple[Entry, Exception]]:
        """Undo ``entries``, newest first; returns the failures (each logged, none raised)."""
        failures: list[tuple[Entry, Exception]] = []
        for entry in reversed(entries):
            undoer = self.undoers.get(entry.kind)
            if undoer is None:
                logger.warning("no undoer for %s on %s; left pending", entry.kind, entry.target)
                continue
            try:
                undoer(entry)
            except Exception as exc:  # teardown logs and goes on
                logger.warning("could not undo %s on %s: %s", entry.kind, entry.target, exc)
                failures.append((entry, exc))
            else:
                self.mark_undone(entry)
        return failures

    def undo_mine(self) -> list[tuple[Entry, Exception]]:
        """Undo what this journal object recorded; returns the failures."""
        mine = set(self._mine)
        return self.undo([e for e in self.pending() if e.id in mine])

    def recover(self) -> list[tuple[Entry, Exception]]:
        """Undo what a crashed run left behind (entries of processes no longer alive).

        Returns the failures. Entries of live processes (a run going on in parallel) stay.
        """
        stale = [e for e in self.pending() if e.id not in self._mine and not _alive(e.pid)]
        if stale:
            logger.info("undoing %d change(s) left by an earlier run", len(stale))
        return self.undo(stale)

    # --- session ------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.recover()
        return self

    def __exit__(self, *exc: object) -> None:
        # Runs on a normal exit, on an exception and on Ctrl-C (KeyboardInterrupt) alike.
        self.undo_mine()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
