"""Tasks on several connections: one transaction each, by dependency, lock and priority.

A :class:`Scheduler` runs :class:`Task` objects on a list of connections, one thread per
connection (the first is the caller's thread). A connection takes the ready task (every
dependency done) of highest priority that would not wait for a lock held by a task running
on another connection; :func:`prioritize` sets each priority to the longest chain of work
from the task to the end. A task may also wait mid-way for another one's end (``wait``).
The first error cancels the statements of the other connections and is raised once every
thread has stopped; the transactions it interrupted are rolled back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend_checks.datagen import session_settings

if TYPE_CHECKING:
    import psycopg

__all__ = ["Run", "Scheduler", "Task", "prioritize"]

log = logging.getLogger(__name__)

# Lock modes of a task on a table, and which pairs wait for each other (PostgreSQL's lock
# table): r read (AccessShare, RowShare), w insert (RowExclusive), s CREATE INDEX (Share),
# a ANALYZE or VALIDATE CONSTRAINT (ShareUpdateExclusive), f ADD FOREIGN KEY
# (ShareRowExclusive), x attach a key (AccessExclusive).
_CONFLICTS = {
    frozenset("ws"),
    frozenset("wf"),
    frozenset("sa"),
    frozenset("sf"),
    frozenset("a"),
    frozenset("af"),
    frozenset("f"),
    *(frozenset({"x", m}) for m in "rwsafx"),
}

#: Runs a task on a connection; the second argument waits for another task's end.
Run = Callable[["psycopg.Connection[Any]", Callable[[str], None]], None]


@dataclass
class Task:
    """One transaction's work: what it needs done first (``deps``, task names), the lock
    mode it takes per table (``locks``: r w s a f x, see ``_CONFLICTS``), its cost in any
    unit (``weight``) and its priority (set by :func:`prioritize`)."""

    name: str
    run: Run
    weight: float
    deps: set[str] = field(default_factory=set)
    locks: dict[str, str] = field(default_factory=dict)
    priority: float = 0.0

    def conflicts(self, other: Task) -> bool:
        """Whether one of the two would wait for a lock the other holds."""
        return any(
            frozenset({mode, other.locks[table]}) in _CONFLICTS
            for table, mode in self.locks.items()
            if table in other.locks
        )


def prioritize(tasks: list[Task]) -> None:
    """Priority = the longest chain of work from a task to the end (its own included)."""
    by_name = {t.name: t for t in tasks}
    dependents: dict[str, list[Task]] = {t.name: [] for t in tasks}
    for task in tasks:
        for dep in task.deps:
            dependents[dep].append(task)

    def chain(task: Task) -> float:
        if not task.priority:
            task.priority = task.weight + max(
                (chain(d) for d in dependents[task.name]), default=0.0
            )
        return task.priority

    for task in by_name.values():
        chain(task)


class Scheduler:
    """Runs tasks on connections, one transaction each: a connection takes the ready task
    of highest priority that does not conflict (by lock) with what the others run."""

    def __init__(self, tasks: list[Task], conns: list[psycopg.Connection[Any]]) -> None:
        self.pending = sorted(tasks, key=lambda t: -t.priority)
        self.conns = conns
        self.done: set[str] = set()
        self.running: dict[int, Task] = {}
        self.times: dict[str, float] = {}
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.started = time.perf_counter()

    def run(self) -> dict[str, float]:
        """Run every task; returns seconds per task. Raises the first task's error (the
        others are cancelled)."""
        threads = [
            threading.Thread(target=self._work, args=(i,), name=f"datagen-{i}", daemon=True)
            for i in range(1, len(self.conns))
        ]
        for thread in threads:
            thread.start()
        try:
            self._work(0)
        except BaseException as exc:  # interrupted while waiting: stop the others too
            with self.cond:
                if self.error is None:
                    self.error = exc
                    self._cancel_others(0)
                self.cond.notify_all()
            raise
        finally:
            for thread in threads:
                thread.join()
        if self.error is not None:
            raise self.error
        return self.times

    def _next(self, me: int) -> Task | None:
        busy = [t for i, t in self.running.items() if i != me]
        for task in self.pending:
            if task.deps <= self.done and not any(task.conflicts(b) for b in busy):
                return task
        return None

    def _work(self, me: int) -> None:
        conn = self.conns[me]
        while True:
            with self.cond:
                while True:
                    if self.error is not None or not self.pending:
                        return
                    task = self._next(me)
                    if task is not None:
                        self.pending.remove(task)
                        self.running[me] = task
                        break
                    if not self.running:
                        self.error = RuntimeError(
                            f"datagen: tasks cannot run: {[t.name for t in self.pending]}"
                        )
                        self.cond.notify_all()
                        return
                    self.cond.wait()
            start = time.perf_counter()
            try:
                with conn.transaction():
                    session_settings(conn, parallel=False)
                    task.run(conn, self._wait)
            except BaseException as exc:
                with self.cond:
                    if self.error is None:
                        self.error = exc
                        self._cancel_others(me)
                    self.running.pop(me, None)
                    self.cond.notify_all()
                return
            with self.cond:
                end = time.perf_counter()
                self.times[task.name] = round(end - start, 3)
                log.debug(
                    "datagen: connection %d ran %s from %.3f to %.3f s",
                    me,
                    task.name,
                    start - self.started,
                    end - self.started,
                )
                self.done.add(task.name)
                self.running.pop(me, None)
                self.cond.notify_all()

    def _wait(self, name: str) -> None:
        """Wait until task ``name`` has run (raises when a task failed meanwhile)."""
        with self.cond:
            while name not in self.done:
                if self.error is not None:
                    raise RuntimeError(f"datagen: {name} did not run")
                self.cond.wait()

    def _cancel_others(self, me: int) -> None:
        for i, conn in enumerate(self.conns):
            if i != me and i in self.running:
                try:
                    conn.cancel_safe(timeout=5)
                except Exception as exc:
                    log.debug("datagen: cancel failed: %s", exc)
