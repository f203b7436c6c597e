"""Locust user classes of the messaging app. Imported only inside a load process.

Importing this module imports Locust, which monkey-patches the standard library with
gevent: the devicelab process must never import it (``backend_checks.load.worker`` is run
as a subprocess). Each simulated user is one greenlet with one session of its own: a
psycopg connection (``SqlSession``; psycopg waits cooperatively under the patched
``select``) or, when the spec names an API URL, an HTTP connection signed in as a
generated user (``RestSession``).

Lifecycle of an :class:`AppUser`::

    on_start  -> connect / sign in (exhaustion and refusals are counted, never raised)
    act       -> wait for the window to open; then every request of the window, at the
                 user's intended times (fixed-rate mode) or back to back (closed loop)
    on_stop   -> close the session (the server flushes its table statistics)

Latency is recorded from the intended start of each request (coordinated omission
corrected: a late request carries the time it waited to be sent), the service time from
its actual start; both in HDR histograms of microseconds, of successful requests only (a
failure is counted, not timed: a refused connection is fast and would flatter the p95).

A user's schedule starts when both the window is open and the user has started: under
Locust's master the window opens at the test's start and users arrive over the ramp, and
a user spawned 9 s late must not carry 9 s of latency it never waited.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, ClassVar

import gevent
from gevent.event import Event
from locust import User, constant, events, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

from backend_checks.load import hdr
from backend_checks.load.mix import SEARCH_TERMS, Operation, operation
from backend_checks.load.models import OpTally, SecondTally, WorkerResult, WorkerSpec
from backend_checks.load.session import Session, SessionError
from backend_checks.load.sql_session import WAKEUP_S, SqlSession, classify

__all__ = ["WAKEUP_S", "AppUser", "Recorder", "classify", "configure"]


class Recorder:
    """Per-operation histograms and per-second tallies of one load process."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.opened = Event()
        self.t0 = 0.0
        self.deadline = 0.0
        self.started_users = 0
        self.connected = 0  # distinct users that connected at least once
        self.live = 0
        self.peak_connected = 0
        self.window_s = 0.0  # the users' own windows, summed (see AppUser.on_stop)
        self.windows = 0
        self.final = False  # set when the test stopped: the next report is the last
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
        """Record one request of ``op`` (perf_counter times); only a success is timed."""
        latency_us = min(max(1, int((end - intended) * 1e6)), hdr.HIGHEST_US)
        if ok:
            self.latency[op].record_value(latency_us)
            self.service[op].record_value(min(max(1, int((end - start) * 1e6)), hdr.HIGHEST_US))
            self.ok[op] += 1
            if end > self.deadline:
                self.late[op] += 1
        else:
            self.failed[op] += 1
        second = self.seconds.get(int(end - self.t0))
        if second is None:
            second = self.seconds[int(end - self.t0)] = [0, 0, hdr.new()]
        second[0 if ok else 1] += 1
        if ok:
            second[2].record_value(latency_us)

    def user_connected(self) -> None:
        """Count a session that is now connected (for the peak connected at once)."""
        self.live += 1
        self.peak_connected = max(self.peak_connected, self.live)

    def drain(self) -> dict[str, Any]:
        """What was recorded since the last drain (JSON-able, histograms encoded), then
        reset: the report a Locust worker sends its master."""
        report = self.result(0.0).model_dump(exclude={"users", "elapsed_s"})
        report["final"] = self.final
        for histogram in (*self.latency.values(), *self.service.values()):
            histogram.reset()
        for counts in (self.ok, self.failed, self.late):
            for name in counts:
                counts[name] = 0
        self.seconds.clear()
        self.errors = {}
        self.connected = self.connect_failures = self.exhaustion = self.missed = 0
        # The peak is not reset: a maximum, each report carries the worker's peak so far.
        self.window_s, self.windows = 0.0, 0
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
            peak_connected=self.peak_connected,
            connect_failures=self.connect_failures,
            exhaustion=self.exhaustion,
            missed=self.missed,
            ops=ops,
            seconds=seconds,
            errors=self.errors,
            elapsed_s=elapsed_s,
            user_window_s=round(self.window_s, 3),
            user_windows=self.windows,
        )


class AppUser(User):
    """One app user: one session, the mix of operations, the identity of a real user."""

    wait_time = constant(0)
    recorder: ClassVar[Recorder | None] = None
    _next_index: ClassVar[int] = 0

    def on_start(self) -> None:
        """Locust's hook as the user starts: gives it its identity and its seeded share of
        the mix (users interleaved across Locust's workers), then connects its session; a
        failed connect is counted and left to the task to retry, not raised. Returns
        None. Raises RuntimeError when ``configure`` was not called."""
        rec = self._rec()
        spec = rec.spec
        # Under Locust's master every worker process counts its users from 0: interleave
        # them by the worker's index, or all workers would be the same users with the
        # same random requests (one identity each, every message sent twice).
        worker, workers = self._slot()
        self.index = AppUser._next_index * workers + worker
        AppUser._next_index += 1
        identity = spec.identities[self.index % len(spec.identities)]
        self.rng = random.Random(spec.seed * 1_000_003 + self.index)
        self.names = list(spec.mix)
        self.weights = list(spec.mix.values())
        # Without a conversation (an account in none) only the list and search remain.
        self.free = [
            (n, w) for n, w in spec.mix.items() if "conversation" not in operation(n).params
        ]
        self.interval = 1.0 / spec.rate_per_user if spec.rate_per_user else 0.0
        # A random phase spreads the users' schedules evenly over one interval.
        self.next_at: float | None = None
        self.began: float | None = None  # when this user's own window opened
        self.live = False
        self.phase = self.rng.random() * self.interval
        self.session: Session = self._session(spec, identity)
        self.last_attempt = 0.0
        self.sent = 0
        self.ever_connected = False
        self.last_error: tuple[str, str] | None = None
        if self._connect():
            self._warm()
        rec.started_users += 1

    def _slot(self) -> tuple[int, int]:
        """This process's index among Locust's workers and their number ((0, 1) when
        not a worker). The number is the master's ``--expect-workers`` (the master passes
        it to its workers), raised when a worker's index shows there are more."""
        runner = self.environment.runner
        index = int(getattr(runner, "worker_index", 0))
        if not isinstance(runner, WorkerRunner) or index < 0:
            return 0, 1
        expected = getattr(self.environment.parsed_options, "expect_workers", 1)
        return index, max(int(expected or 1), index + 1)

    @staticmethod
    def _session(spec: WorkerSpec, identity: Any) -> Session:
        if spec.api_url:
            from backend_checks.load.rest_session import RestSession

            return RestSession(spec, identity)
        return SqlSession(spec, identity)

    def on_stop(self) -> None:
        """Locust's hook as the user stops: adds the time it spent in the window to the
        recorder's (for throughput), counts its session as gone and closes it. Returns
        None. Raises RuntimeError when ``configure`` was not called."""
        rec = self._rec()
        if self.began is not None:
            # Stopped at the window's end, or earlier by Locust's master (-t shorter than
            # the spec's window): the time this user was in the window, for throughput.
            rec.window_s += max(0.0, min(time.perf_counter(), rec.deadline) - self.began)
            rec.windows += 1
        self._gone(rec)
        self.session.close()

    def _gone(self, rec: Recorder) -> None:
        """Count this user's session as no longer connected (once)."""
        if self.live:
            self.live = False
            rec.live -= 1

    def _rec(self) -> Recorder:
        if AppUser.recorder is None:
            raise RuntimeError("configure() was not called")
        return AppUser.recorder

    def _connect(self) -> bool:
        rec = self._rec()
        self.last_attempt = time.perf_counter()
        try:
            self.session.connect()
        except SessionError as exc:
            rec.connect_failures += 1
            rec.error(exc.kind, exc.message)
            self.last_error = (exc.kind, exc.message)
            return False
        self.last_error = None
        if not self.live:
            if not self.ever_connected:
                # Users, not attempts: a reconnect is the same user again.
                rec.connected += 1
                self.ever_connected = True
            self.live = True
            rec.user_connected()
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
        if self.began is None:
            self.began = max(rec.t0, now)
        if self.interval:
            if self.next_at is None:
                self.next_at = self.began + self.phase
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
        name = self._pick()
        if not self.session.connected:
            self._gone(rec)
        # Reconnect at most once a second, as a client would; the missed request counts.
        waiting = time.perf_counter() - self.last_attempt < 1.0
        if not self.session.connected and (waiting or not self._connect()):
            if waiting:
                # No attempt made: counted under the last attempt's cause all the same, so
                # the errors by cause add up to the failed requests (an attempt that failed
                # now counted its own).
                rec.error(*(self.last_error or ("connection", "not connected (reconnecting)")))
            rec.record(name, intended, intended, time.perf_counter(), ok=False)
            if not self.interval:
                gevent.sleep(1.0)
            return True
        self._run(rec, name, intended)
        return True

    def _warm(self) -> None:
        """Run each operation of the mix once before the window (``Session.warm``), with
        parameters of a random generator of its own: the window's requests stay those
        of the seed."""
        rng = random.Random(f"warm-up {self._rec().spec.seed} {self.index}")
        requests: list[tuple[Operation, dict[str, str]]] = []
        for name in self.names:
            op = operation(name)
            if "conversation" in op.params and not self.session.conversations:
                continue
            values: dict[str, str] = {
                "conversation": rng.choice(self.session.conversations or [""]),
                "term": rng.choice(SEARCH_TERMS),
                "content": "warm-up (rolled back)",
            }
            requests.append((op, {kind: values[kind] for kind in op.params}))
        self.session.warm(requests)

    def _pick(self) -> str:
        if self.session.conversations or not self.free:
            return self.rng.choices(self.names, self.weights)[0]
        names, weights = zip(*self.free, strict=True)
        return str(self.rng.choices(names, weights)[0])

    def _run(self, rec: Recorder, name: str, intended: float) -> None:
        op = operation(name)
        params: dict[str, str] = {kind: self._param(kind) for kind in op.params}
        start = time.perf_counter()
        error: SessionError | None = None
        try:
            self.session.run(op, params)
        except SessionError as exc:
            error = exc
            rec.error(exc.kind, exc.message)
        end = time.perf_counter()
        rec.record(name, intended, start, end, ok=error is None)
        if rec.spec.locust_stats:
            events.request.fire(  # type: ignore[no-untyped-call]
                request_type="http" if rec.spec.api_url else "sql",
                name=name,
                response_time=(end - intended) * 1000,
                response_length=0,
                exception=error,
                context={},
            )

    def _param(self, kind: str) -> str:
        if kind == "conversation":
            return self.rng.choice(self.session.conversations)
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
