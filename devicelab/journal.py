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

A run is known by its pid *and* its process start time (``started``), so a pid that a
crashed run had and a new process reuses (after a reboot, in a container) does not keep
the crashed run's changes from being undone.

Undoing is shielded (``held_interrupts()``): a Ctrl-C or SIGTERM that lands while a device
is being put back is held until every step of it is done, then raised (``HeldInterrupt``),
so a second Ctrl-C never leaves a phone half restored.

Each entry may say in ``data["what"]`` what the change is in the user's words (e.g.
"http_proxy 127.0.0.1:8080 (was unset)"); ``describe()`` joins them for the lines that
tell the user what a run left changed (at exit, at recovery, in ``devicelab devices``).

``journal.claim(target, "routed")`` takes a device for one run alone (a lock file under
the state folder, released by the kernel when the process dies): a second run would read
the first run's change as the device's own setting and later restore it.

The file is JSON lines, by default ``$DEVICELAB_STATE/journal.jsonl`` (``DEVICELAB_STATE``
defaults to ``~/.local/state/devicelab``); an advisory lock keeps concurrent writers apart.
A line that cannot be read (a torn write, a hand edit) is skipped with a warning. Once it
holds ``COMPACT_AT`` settled lines (changes undone, and their marks), ``pending()``
rewrites it without them, under the lock: pending and unreadable lines are written to a
new file, fsynced, renamed over the journal. A process that waited for the old file's
lock sees it was replaced and takes the new one's, so no line goes to the old file.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from devicelab.errors import EnvironmentProblem, first_line

# Re-exported: the journal's undo holds interrupts; callers long imported them from here.
from devicelab.interrupts import HeldInterrupt, held_interrupts

__all__ = [
    "COMPACT_AT",
    "Claim",
    "Entry",
    "HeldInterrupt",
    "Journal",
    "Undoer",
    "default_path",
    "describe",
    "held_interrupts",
]

logger = logging.getLogger("devicelab.journal")

#: The journal's own default folder, for this user (the managed cluster's is another).
_HINT = (
    "set DEVICELAB_STATE to a folder you can write (the journal's default, when it is"
    f" unset: {Path('~/.local/state/devicelab').expanduser()})"
)
# Process start times are whole clock ticks after a whole-second boot time: equal for the
# same process however often read; a reused pid starts at least this much later.
_SAME_START_S = 0.5


@functools.cache
def _started(pid: int) -> float | None:
    """When process ``pid`` (this one) started, as psutil's create_time (None if unknown)."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _this_process_started() -> float | None:
    return _started(os.getpid())  # keyed by pid: a forked child is a process of its own


@dataclass(frozen=True)
class Entry:
    """One change: ``kind`` names its undoer, ``target`` the device, ``data`` what undoes it.

    ``pid`` and ``started`` (its start time; None on lines written before it was kept)
    identify the process that made it."""

    kind: str
    target: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)
    started: float | None = field(default_factory=_this_process_started)


Undoer = Callable[[Entry], None]


def describe(entries: list[Entry]) -> str:
    """What ``entries`` changed, in the user's words, oldest first, joined by ", " (an
    entry without ``data["what"]`` is named by its kind)."""
    return ", ".join(str(e.data.get("what") or e.kind) for e in entries)


def default_path() -> Path:
    """The journal file: ``$DEVICELAB_STATE/journal.jsonl`` (~/.local/state/devicelab)."""
    root = os.environ.get("DEVICELAB_STATE") or "~/.local/state/devicelab"
    return Path(root).expanduser() / "journal.jsonl"


#: Settled lines (changes undone and their marks) a journal holds before ``pending()``
#: rewrites it without them: it only grew (~8 lines a session) and every read parses it.
COMPACT_AT = 256

# Open claim files: a claim whose object is dropped (a route applied and not kept) must
# still hold its device until released or until the process ends.
_HELD: set[IO[bytes]] = set()


class Claim:
    """One run's hold on a device (see ``Journal.claim``); ``release()`` lets it go."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle: IO[bytes] | None = handle
        _HELD.add(handle)

    def release(self) -> None:
        """Let the device go (a second call does nothing); returns None, never raises."""
        handle, self._handle = self._handle, None
        if handle is not None:
            _HELD.discard(handle)
            handle.close()  # closing the file drops its flock


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
        self._warned = False

    # --- writing ------------------------------------------------------------------------
    def _open(self, path: Path) -> IO[bytes]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("a+b")
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot use the devicelab state folder {path.parent}: {first_line(exc)}",
                hint=_HINT,
            ) from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[IO[bytes]]:
        while True:
            handle = self._open(self.path)
            fcntl.flock(handle, fcntl.LOCK_EX)
            if _is_current(handle, self.path):
                break
            # A compaction replaced the file while we waited for its lock: what we hold is
            # the old one, no longer read by anyone; a line written there would be lost.
            handle.close()
        with handle:
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _append(self, line: dict[str, Any]) -> None:
        payload = (json.dumps(line, sort_keys=True) + "\n").encode()
        with self._locked() as handle:
            end = handle.seek(0, os.SEEK_END)
            if end:
                handle.seek(end - 1)
                if handle.read(1) != b"\n":
                    # A write torn by a crash: appended to it, this line would be unreadable.
                    payload = b"\n" + payload
            try:
                handle.write(payload)  # "a" mode: written at the end wherever we read
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                raise EnvironmentProblem(
                    f"cannot write the journal {self.path}: {first_line(exc)}", hint=_HINT
                ) from exc

    def record(self, kind: str, target: str, data: Mapping[str, Any] | None = None) -> Entry:
        """Write a change down before it is made; returns its entry.

        Raises EnvironmentProblem when the journal cannot be written (then make no change).
        """
        entry = Entry(kind=kind, target=target, data=dict(data or {}))
        self._append({"op": "change", **entry.__dict__})
        self._mine.append(entry.id)
        return entry

    def mark_undone(self, entry: Entry) -> None:
        """Note that ``entry`` has been undone (or needs no undo any more); returns None.

        Raises EnvironmentProblem when the journal cannot be written."""
        self._append({"op": "undone", "id": entry.id, "at": time.time()})
        with contextlib.suppress(ValueError):
            self._mine.remove(entry.id)

    def claim(self, target: str, doing: str) -> Claim:
        """Take ``target`` for this run alone while it is ``doing`` (e.g. "routed"); returns
        the claim, held until ``release()`` or the end of the process.

        Raises EnvironmentProblem when another live run holds it (naming its pid), when
        this process holds it already (a session not yet closed), or the state folder
        cannot be used."""
        handle = self._open(self.path.parent / "claims" / f"{_claim_name(target)}.lock")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(200).decode(errors="replace").strip() or "unknown"
            handle.close()
            if holder == str(os.getpid()):
                # Ours: a session of this process still open (nested, or never closed);
                # "kill <our pid>" would be the wrong advice.
                raise EnvironmentProblem(
                    f"{target} is already {doing} by this process (pid {holder}): a devicelab "
                    "session on it is still open",
                    hint="end that session (leave its `with` block) before starting another "
                    "on this device, or use another device",
                ) from None
            raise EnvironmentProblem(
                f"{target} is already {doing} by another devicelab run (pid {holder})",
                hint=f"wait for that run to end (or stop it: kill {holder}), then run again",
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()).encode())
        handle.flush()
        return Claim(handle)

    def _claimed_by_another(self, target: str) -> bool:
        """Whether another live process holds ``target``'s claim (``claim``)."""
        path = self.path.parent / "claims" / f"{_claim_name(target)}.lock"
        try:
            handle = path.open("rb")
        except OSError:
            return False  # never claimed, or unreadable: as before claims existed
        with handle:
            if handle.read(200).decode(errors="replace").strip() == str(os.getpid()):
                return False  # ours (a lock taken through another handle looks held)
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    # --- reading and undoing ------------------------------------------------------------
    def pending(self) -> list[Entry]:
        """Changes recorded and not undone, oldest first (every process's).

        Unreadable lines are skipped (logged once). Raises EnvironmentProblem when the
        journal exists but cannot be opened."""
        if not self.path.exists():
            return []
        changes: dict[str, Entry] = {}
        bad: list[int] = []
        lines: list[tuple[bytes, str | None]] = []  # the lines but undone marks, change ids
        total = 0
        with self._locked() as handle:
            handle.seek(0)
            for number, raw in enumerate(handle, start=1):
                total = number
                item = _parse(raw)
                if item is None:
                    bad.append(number)
                    lines.append((raw, None))
                elif item.get("op") == "change":
                    entry = _entry(item)
                    if entry is None:
                        bad.append(number)
                        lines.append((raw, None))
                    else:
                        changes[entry.id] = entry
                        lines.append((raw, entry.id))
                elif item.get("op") == "undone" and isinstance(item.get("id"), str):
                    changes.pop(item["id"], None)
                else:
                    bad.append(number)
                    lines.append((raw, None))
            # Kept: pending changes, and lines that cannot be read (left for a human).
            kept = [raw for raw, id_ in lines if id_ is None or id_ in changes]
            if total - len(kept) >= COMPACT_AT:
                self._compact(kept)
        if bad and not self._warned:
            # A torn last line is a change never made (it is written before the change).
            self._warned = True
            logger.warning("skipped unreadable line(s) %s of %s", bad[:10], self.path)
        return list(changes.values())

    def _compact(self, kept: list[bytes]) -> None:
        """Replace the journal by ``kept`` (its pending and unreadable lines), atomically:
        written and fsynced beside it, then renamed over it. Called with the lock held;
        the file keeps its old lines when this fails (logged, never raised)."""
        spare = self.path.with_name(self.path.name + ".compact")
        try:
            with spare.open("wb") as out:
                out.writelines(raw if raw.endswith(b"\n") else raw + b"\n" for raw in kept)
                out.flush()
                os.fsync(out.fileno())
            spare.replace(self.path)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)  # the rename itself survives a power cut
            finally:
                os.close(folder)
        except OSError as exc:
            logger.warning("could not compact the journal %s: %s", self.path, first_line(exc))
            with contextlib.suppress(OSError):
                spare.unlink()

    def undo(self, entries: list[Entry]) -> list[tuple[Entry, Exception]]:
        """Undo ``entries``, newest first; returns the failures (each logged). Every step
        runs even through Ctrl-C (``held_interrupts``): raises nothing but HeldInterrupt,
        after the last step, when one came."""
        with held_interrupts():
            return self._undo(entries)

    def _undo(self, entries: list[Entry]) -> list[tuple[Entry, Exception]]:
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
        for target in sorted({entry.target for entry, _ in failures}):
            logger.warning(
                "changes on %s stay pending in %s: the next devicelab run on that device "
                "undoes them",
                target,
                self.path,
            )
        return failures

    def undo_mine(self) -> list[tuple[Entry, Exception]]:
        """Undo what this journal object recorded; returns the failures."""
        mine = set(self._mine)
        return self.undo([e for e in self.pending() if e.id in mine])

    def recover(self, targets: Collection[str] | None = None) -> list[tuple[Entry, Exception]]:
        """Undo what a crashed run left behind (entries of processes no longer alive) on
        ``targets`` (None: every device).

        Returns the failures. Entries of live processes (a run going on in parallel) stay,
        and so do those of a device another live run has claimed: that run put them back
        when it took the device, or is working on them (a hub port it cut again).
        """
        stale = [
            e
            for e in self.pending()
            if e.id not in self._mine
            and not _alive(e)
            and (targets is None or e.target in targets)
            and not self._claimed_by_another(e.target)
        ]
        for target in dict.fromkeys(e.target for e in stale):
            # Said, not only logged: the user may have lived with a routed phone since.
            left = [e for e in stale if e.target == target]
            pids = ", ".join(str(pid) for pid in dict.fromkeys(e.pid for e in left))
            logger.warning(
                "putting back what a devicelab run that died (pid %s) left on %s: %s",
                pids,
                target,
                describe(left),
            )
        return self.undo(stale)

    def left_by_this_process(self, since: float = 0.0) -> list[Entry]:
        """The changes this process recorded at or after ``since`` (time.time()) that are
        still pending, oldest first, whichever Journal object recorded them. Raises
        EnvironmentProblem when the journal cannot be read."""
        me, started = os.getpid(), _this_process_started()
        return [e for e in self.pending() if e.pid == me and e.started == started and e.at >= since]

    def dead_runs_left(self) -> list[Entry]:
        """Pending changes whose run is no longer alive (what the next run puts back),
        oldest first. Raises EnvironmentProblem when the journal cannot be read."""
        return [e for e in self.pending() if not _alive(e)]

    # --- session ------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.recover()
        return self

    def __exit__(self, *exc: object) -> None:
        # Runs on a normal exit, on an exception and on Ctrl-C (KeyboardInterrupt) alike.
        self.undo_mine()


def _is_current(handle: IO[bytes], path: Path) -> bool:
    """Whether ``handle`` is still the file at ``path`` (a compaction renames a new file
    over it)."""
    try:
        now = path.stat()
    except OSError:
        return False
    held = os.fstat(handle.fileno())
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _claim_name(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", target)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        item = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return item if isinstance(item, dict) else None


def _entry(item: dict[str, Any]) -> Entry | None:
    """The entry of a ``change`` line, None when a field is missing or of the wrong type."""
    kind, target, data, id_ = item.get("kind"), item.get("target"), item.get("data"), item.get("id")
    at, pid, started = item.get("at"), item.get("pid"), item.get("started")
    if not (isinstance(kind, str) and isinstance(target, str) and isinstance(id_, str)):
        return None
    if not (isinstance(data, dict) and isinstance(pid, int) and isinstance(at, int | float)):
        return None
    if started is not None and not isinstance(started, int | float):
        return None
    return Entry(kind=kind, target=target, data=data, id=id_, at=at, pid=pid, started=started)


def _alive(entry: Entry) -> bool:
    """Whether the process that recorded ``entry`` still runs (not another one on its pid)."""
    import psutil

    try:
        created = psutil.Process(entry.pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: leaving a live run's change alone is the safe side
    if entry.started is not None:
        return abs(created - entry.started) < _SAME_START_S
    # A line from before start times were kept: a process younger than the change did not
    # make it.
    return created <= entry.at + _SAME_START_S
