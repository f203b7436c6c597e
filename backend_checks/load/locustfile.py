"""Locust user classes of the messaging app. Imported only inside a load process.

Importing this module imports Locust, which monkey-patches the standard library with
gevent: the devicelab process must never import it (``backend_checks.load.worker`` is run
as a subprocess). psycopg 3 notices the patched ``select`` and waits cooperatively, so
each simulated user is one greenlet with one connection of its own.

Lifecycle of an :class:`AppUser`::

    on_start  -> connect as the DSN's user (exhaustion is counted, never raised)
    act       -> wait for the window to open; then every request of the window, at the
                 user's intended times (fixed-rate mode) or back to back (closed loop)
    on_stop   -> close the connection (the server flushes its table statistics)

Latency is recorded from the intended start of each request (coordinated omission
corrected: a late request carries the time it waited to be sent), the service time from
its actual start; both in HDR histograms of microseconds.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, ClassVar

import gevent
import psycopg
from gevent.event import Event
from locust import User, constant, events, task
from locust.exception import StopUser

from backend_checks.load import hdr
from backend_checks.load.mix import IDENTITY_SQL, SEARCH_TERMS, operation
from backend_checks.load.models import OpTally, SecondTally, WorkerResult, WorkerSpec

__all__ = ["AppUser", "Recorder", "classify", "configure"]

_EXHAUSTION_TEXT = (
    "too many clients",
    "too many connections",
    "remaining connection slots",
    "connection pool",
    "pool timeout",
)


def classify(exc: BaseException) -> str:
    """The error kind of ``exc``: "exhaustion" (no connection slot left), "timeout",
    "connection" (lost or refused), or "sql:<sqlstate>"."""
    text = str(exc).lower()
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == "53300" or any(marker in text for marker in _EXHAUSTION_TEXT):
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


class _Connection(psycopg.Connection[Any]):
    """psycopg's connection, waking every :data:`WAKEUP_S` while it waits."""

    def wait(self, gen: Any, interval: float = WAKEUP_S, timeout: float | None = None) -> Any:
        return super().wait(gen, interval=interval, timeout=timeout)


class Recorder:
    """Per-operation histograms and per-second tallies of one load process."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.opened = Event()
        self.t0 = 0.0
        self.deadline = 0.0
        self.started_users = 0
        self.connected = 0
        self.connect_failures = 0
        self.exhaustion = 0
        self.missed = 0
        self.errors: dict[str, int] = {}
        self.latency = {name: hdr.new() for name in spec.mix}
        self.service = {name: hdr.new() for name in spec.mix}
        self.ok = dict.fromkeys(spec.mix, 0)
        self.failed = dict.fromkeys(spec.mix, 0)
        self.late = dict.fromkeys(spec.mix, 0)
        self.seconds: dict[int, list[Any]] = {}

    def open(self, t0: float) -> None:
        """Open the window at ``t0`` (perf_counter clock) for ``spec.duration_s``."""
        self.t0 = t0
        self.deadline = t0 + self.spec.duration_s
        self.opened.set()

    def error(self, kind: str, message: str) -> None:
        """Count an error of ``kind``; the first line of its message is kept as a key."""
        if kind == "exhaustion":
            self.exhaustion += 1
        key = f"{kind}: {message.strip().splitlines()[0][:160] if message.strip() else kind}"
        self.errors[key] = self.errors.get(key, 0) + 1

    def record(self, op: str, intended: float, start: float, end: float, ok: bool) -> None:
        """Record one request of ``op`` (perf_counter times)."""
        latency_us = max(1, int((end - intended) * 1e6))
        self.latency[op].record_value(min(latency_us, hdr.HIGHEST_US))
        self.service[op].record_value(min(max(1, int((end - start) * 1e6)), hdr.HIGHEST_US))
        if ok:
            self.ok[op] += 1
            if end > self.deadline:
                self.late[op] += 1
        else:
            self.failed[op] += 1
        second = self.seconds.get(int(end - self.t0))
        if second is None:
            second = self.seconds[int(end - self.t0)] = [0, 0, hdr.new()]
        second[0 if ok else 1] += 1
        second[2].record_value(min(latency_us, hdr.HIGHEST_US))

    def drain(self) -> dict[str, Any]:
        """What was recorded since the last drain (JSON-able, histograms encoded), then
        reset: the report a Locust worker sends its master."""
        report = self.result(0.0).model_dump(exclude={"users", "elapsed_s"})
        for histogram in (*self.latency.values(), *self.service.values()):
            histogram.reset()
        for counts in (self.ok, self.failed, self.late):
            for name in counts:
                counts[name] = 0
        self.seconds.clear()
        self.errors = {}
        self.connected = self.connect_failures = self.exhaustion = self.missed = 0
        return report

    def result(self, elapsed_s: float) -> WorkerResult:
        """Everything recorded, histograms encoded."""
        ops = {
            name: OpTally(
                ok=self.ok[name],
                errors=self.failed[name],
                late=self.late[name],
                latency_hdr=self.latency[name].encode().decode("ascii"),
                service_hdr=self.service[name].encode().decode("ascii"),
            )
            for name in self.spec.mix
        }
        seconds = [
            SecondTally(t=t, ok=ok, errors=err, latency_hdr=h.encode().decode("ascii"))
            for t, (ok, err, h) in sorted(self.seconds.items())
            if 0 <= t < int(self.spec.duration_s + 0.999)
        ]
        return WorkerResult(
            users=self.spec.users,
            connected=self.connected,
            connect_failures=self.connect_failures,
            exhaustion=self.exhaustion,
            missed=self.missed,
            ops=ops,
            seconds=seconds,
            errors=self.errors,
            elapsed_s=elapsed_s,
        )


class AppUser(User):
    """One app user: one connection, the mix of operations, the identity of a real user."""

    wait_time = constant(0)
    recorder: ClassVar[Recorder | None] = None
    _next_index: ClassVar[int] = 0

    def on_start(self) -> None:
        rec = self._rec()
        spec = rec.spec
        self.index = AppUser._next_index
        AppUser._next_index += 1
        self.identity = spec.identities[self.index % len(spec.identities)]
        self.rng = random.Random(spec.seed * 1_000_003 + self.index)
        self.names = list(spec.mix)
        self.weights = list(spec.mix.values())
        self.interval = 1.0 / spec.rate_per_user if spec.rate_per_user else 0.0
        # A random phase spreads the users' schedules evenly over one interval.
        self.next_at: float | None = None
        self.phase = self.rng.random() * self.interval
        self.conn: psycopg.Connection[Any] | None = None
        self.cur: psycopg.Cursor[Any] | None = None
        self.last_attempt = 0.0
        self.sent = 0
        self._connect()
        rec.started_users += 1

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _rec(self) -> Recorder:
        if AppUser.recorder is None:
            raise RuntimeError("configure() was not called")
        return AppUser.recorder

    def _connect(self) -> bool:
        rec = self._rec()
        spec = rec.spec
        self.last_attempt = time.perf_counter()
        try:
            self.conn = _Connection.connect(
                spec.dsn,
                autocommit=True,
                connect_timeout=spec.connect_timeout_s,
                application_name="devicelab-load",
                options=f"-c statement_timeout={spec.statement_timeout_ms}",
            )
        except psycopg.Error as exc:
            rec.connect_failures += 1
            rec.error(classify(exc), str(exc))
            return False
        rec.connected += 1
        return True

    @task
    def act(self) -> None:
        """Run the mix until the window closes, then stop the user.

        One task call runs every request of the window: returning to Locust between
        requests costs a ``gevent.sleep(0)``, which queues the user behind every other
        ready user (measured: 0.5-1.5 s idle gaps per request at 1000 users).
        """
        rec = self._rec()
        rec.opened.wait()
        while self._one(rec):
            pass
        raise StopUser()

    def _one(self, rec: Recorder) -> bool:
        """One request at its intended time; False when the window has closed."""
        now = time.perf_counter()
        if self.interval:
            if self.next_at is None:
                self.next_at = rec.t0 + self.phase
            intended = self.next_at
            self.next_at += self.interval
            if intended >= rec.deadline:
                # Stay connected to the end of the window, as an idle app would.
                gevent.sleep(max(0.0, rec.deadline - now))
                return False
            if now >= rec.deadline:
                # Behind schedule when the window closed: the requests never sent are
                # counted, not sent late (the run would outlast its window).
                rec.missed += math.ceil((rec.deadline - intended) / self.interval)
                return False
            if intended > now:
                gevent.sleep(intended - now)
        else:
            intended = now
            if now >= rec.deadline:
                return False
        name = self.rng.choices(self.names, self.weights)[0]
        if self.conn is None or self.conn.closed:
            self.conn = None
            # Retry at most once a second, as a client would; the missed request counts.
            if time.perf_counter() - self.last_attempt < 1.0 or not self._connect():
                rec.record(name, intended, intended, time.perf_counter(), ok=False)
                if not self.interval:
                    gevent.sleep(1.0)
                return True
        self._run(rec, name, intended)
        return True

    def _run(self, rec: Recorder, name: str, intended: float) -> None:
        op = operation(name)
        params = [self._param(kind) for kind in op.params]
        start = time.perf_counter()
        error: BaseException | None = None
        assert self.conn is not None
        try:
            # One cursor per connection: a new one per request costs ~75 us of setup.
            if self.cur is None or self.cur.connection is not self.conn:
                self.cur = self.conn.cursor()
            self.cur.execute(IDENTITY_SQL, (self.identity.claims,), prepare=True)
            self.cur.execute(op.sql, params, prepare=True)
            self.cur.fetchall()
        except psycopg.Error as exc:
            error = exc
            rec.error(classify(exc), str(exc))
            if self.conn.broken or self.conn.closed:
                self.conn = None
        end = time.perf_counter()
        rec.record(name, intended, start, end, ok=error is None)
        if rec.spec.locust_stats:
            events.request.fire(  # type: ignore[no-untyped-call]
                request_type="sql",
                name=name,
                response_time=(end - intended) * 1000,
                response_length=0,
                exception=error,
                context={},
            )

    def _param(self, kind: str) -> str:
        if kind == "conversation":
            return self.rng.choice(self.identity.conversations)
        if kind == "term":
            return self.rng.choice(SEARCH_TERMS)
        self.sent += 1
        return f"load test {self.index}-{self.sent}: see you at the meeting tomorrow"


def configure(spec: WorkerSpec) -> Recorder:
    """Give :class:`AppUser` its spec; returns the recorder the users report to."""
    AppUser.recorder = Recorder(spec)
    AppUser._next_index = 0
    return AppUser.recorder


# Locust's own CLI (master and workers on several machines) finds its hooks here.
from backend_checks.load import distributed  # noqa: E402

distributed.install(configure)
