"""A user's SQL session: one psycopg connection, requests run as PostgREST runs them.

Imported only inside a load process (psycopg then waits cooperatively under gevent's
patched ``select``). Each request sets the role and the JWT claims (``IDENTITY_SQL``),
then runs one prepared statement, so row-level security applies as for the app.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from backend_checks.db import options_with_timeout
from backend_checks.load.mix import IDENTITY_SQL, Operation
from backend_checks.load.models import Identity, WorkerSpec
from backend_checks.load.session import SessionError, is_exhaustion

__all__ = ["WAKEUP_S", "SqlSession", "classify"]


def classify(exc: BaseException) -> str:
    """The error kind of ``exc``: "exhaustion" (no connection slot left), "timeout",
    "connection" (lost or refused), or "sql:<sqlstate>"."""
    text = str(exc).lower()
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == "53300" or is_exhaustion(text):
        return "exhaustion"
    if sqlstate == "57014" or "statement timeout" in text:
        return "timeout"
    if isinstance(exc, psycopg.OperationalError) and sqlstate is None:
        return "connection"
    return f"sql:{sqlstate or type(exc).__name__}"


#: How often a user waiting for the server wakes up anyway. psycopg wakes every 0.1 s (so
#: Ctrl-C is seen): ~38 us of CPU per wake-up under gevent (measured: 300 users waiting
#: 1 s three times cost 0.50 s of CPU at 0.1 s, 0.16 s at 5 s), and 1000 users queued for
#: seconds on a saturated server wake ~10K times a second, ~0.4 core taken from the
#: server on a shared machine. Nobody presses Ctrl-C here: the parent stops us.
WAKEUP_S = 5.0


#: Makes the backend flush its pending table counters when it next goes idle (before it
#: answers ReadyForQuery): PostgreSQL 15+.
_FLUSH_SQL = "SELECT pg_stat_force_next_flush()"


class _Connection(psycopg.Connection[Any]):
    """psycopg's connection, waking every :data:`WAKEUP_S` while it waits."""

    def wait(self, gen: Any, interval: float = WAKEUP_S, timeout: float | None = None) -> Any:
        return super().wait(gen, interval=interval, timeout=timeout)


class SqlSession:
    """One connection as the DSN's user, speaking as ``identity`` (its JWT claims)."""

    def __init__(self, spec: WorkerSpec, identity: Identity) -> None:
        self.spec = spec
        self.identity = identity
        self.conversations = list(identity.conversations)
        self.conn: psycopg.Connection[Any] | None = None
        self.cur: psycopg.Cursor[Any] | None = None

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self.conn is not None and not self.conn.closed

    def connect(self) -> None:
        """Open the connection. Raises SessionError (exhaustion is one of its kinds)."""
        spec = self.spec
        try:
            given = conninfo_to_dict(spec.dsn)
            self.conn = _Connection.connect(
                spec.dsn,
                autocommit=True,
                connect_timeout=given.get("connect_timeout", spec.connect_timeout_s),
                application_name="devicelab-load",
                options=options_with_timeout(given, spec.statement_timeout_ms),
            )
        except psycopg.Error as exc:
            raise SessionError(classify(exc), str(exc)) from None
        self.cur = None

    def run(self, op: Operation, params: dict[str, str]) -> None:
        """Set the identity, run ``op`` (prepared), fetch its rows. Raises SessionError."""
        conn = self.conn
        if conn is None:
            raise SessionError("connection", "not connected", lost=True)
        try:
            # One cursor per connection: a new one per request costs ~75 us of setup.
            if self.cur is None:
                self.cur = conn.cursor()
            self.cur.execute(IDENTITY_SQL, (self.identity.claims,), prepare=True)
            self.cur.execute(op.sql, [params[kind] for kind in op.params], prepare=True)
            self.cur.fetchall()
        except psycopg.Error as exc:
            lost = conn.broken or conn.closed
            if lost:
                self.conn = None
            raise SessionError(classify(exc), str(exc), lost=lost) from None

    def warm(self, requests: list[tuple[Operation, dict[str, str]]]) -> None:
        """Run each request once before the window (never raises).

        A new backend's first run of a statement loads its catalog caches, plans it and
        compiles the PL/pgSQL functions it calls: 50-150 ms on a 2-core machine with a
        thousand new sessions, against ~10 ms warm (measured: the first 6 s of a 1000-user
        window at p95 66-157 ms, the rest 7-25 ms). PostgREST's pool connections are
        long-lived and warm, so the window should meet warm sessions. The writes run in a
        transaction rolled back (nothing is written; the functions' compiled code and
        cached plans stay), unprepared: psycopg forgets its prepared statements at a
        ROLLBACK. The reads then run as :meth:`run` runs them, prepared, and stay so.
        Last, the backend flushes the table counters of all this before the step's
        statistics are read (``pg_stat_force_next_flush``, PostgreSQL 15+: a backend
        otherwise holds them up to 10 s, and the rolled-back inserts would count in the
        window's deltas). Where that function is missing (before PostgreSQL 15) or not
        granted, nothing is warmed.
        """
        conn = self.conn
        if conn is None or conn.info.server_version < 150000:
            return
        try:
            conn.execute(_FLUSH_SQL)
        except psycopg.Error:
            if conn.broken or conn.closed:
                self.conn = None
            return
        with contextlib.suppress(psycopg.Error):
            if any(op.writes for op, _ in requests):
                with conn.transaction(force_rollback=True), conn.cursor() as cur:
                    cur.execute(IDENTITY_SQL, (self.identity.claims,))
                    for op, params in requests:
                        if op.writes:
                            cur.execute(op.sql, [params[kind] for kind in op.params])
        for op, params in requests:
            if not op.writes and self.conn is not None:
                with contextlib.suppress(SessionError):  # the window will count it
                    self.run(op, params)
        with contextlib.suppress(psycopg.Error):
            conn.execute(_FLUSH_SQL)
        if conn.broken or conn.closed:
            self.conn = None

    def close(self) -> None:
        """Close the connection (the backend flushes its table counters on exit)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
