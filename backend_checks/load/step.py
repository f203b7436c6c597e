"""One load step (N users), driven by ``runner.run_target``::

    spawn P worker processes (python -m backend_checks.load.worker), N/P users each
    wait until every user has tried to connect or sign in ("ready")
    snapshot the statistics, start CPU sampling, send "go <t0>" to every worker
    wait for "done"; snapshot again; merge the HDR histograms of the workers

A step whose server went away (the API refuses connections once the window is over, or
the database cannot be reached for the last snapshot) is still merged and handed to the
run's progress, then BackendUnavailable is raised: a load cannot judge a server that is
gone, but what it measured until then is kept.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from backend_checks.db import connect, redact
from backend_checks.load import dbstats, procs
from backend_checks.load.cpu import CpuSampler, local_server
from backend_checks.load.merge import cpu_report, merge_step
from backend_checks.load.models import (
    CpuReport,
    Identity,
    StatsDelta,
    StepResult,
    Transport,
    WorkerResult,
    WorkerSpec,
)
from devicelab.errors import BackendUnavailable, first_line

if TYPE_CHECKING:
    from backend_checks.load.runner import LoadOptions, LoadProgress, LoadTarget

__all__ = ["Database", "api_reachable", "run_step", "snapshot"]

_log = logging.getLogger("backend_checks.load.runner")  # the progress lines' logger

#: Wait before the last snapshot of an HTTP step: an API's idle pooled backends flush
#: their table counters within 10 s (measured: after 1.5 s one insert of 17 was still missing).
_API_FLUSH_S = 10.5
#: How long the probe of an API that may have gone away waits for its TCP connection.
_PROBE_TIMEOUT_S = 3.0


@dataclass
class Database:
    """Our own connection to the loaded database, when we have one."""

    conn: Any
    schema: str
    note: str
    server: psutil.Process | None


def snapshot(db: Database, dsn: str) -> dbstats.Snapshot:
    """The statistics now. Our connection sits idle through the window, so the server may
    have closed it (idle_session_timeout, a restart, pg_terminate_backend): then once more
    on a new one. Raises BackendUnavailable when the server is gone."""
    import psycopg

    try:
        return dbstats.snapshot(db.conn, db.schema)
    except psycopg.OperationalError:
        if not (db.conn.closed or db.conn.broken):
            raise
    try:
        db.conn = connect(dsn, autocommit=True)
        return dbstats.snapshot(db.conn, db.schema)
    except (psycopg.OperationalError, BackendUnavailable) as exc:
        reason = exc.message if isinstance(exc, BackendUnavailable) else first_line(exc)
        raise BackendUnavailable(
            f"the database went away during the load: {redact(reason, dsn)}",
            hint="check that the server runs (and its idle_session_timeout), then run again",
        ) from None


def api_reachable(url: str) -> bool:
    """Whether the API at ``url`` still accepts a TCP connection (a server that stopped
    refuses it; one that only answers errors still counts as there)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), _PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _processes(options: LoadOptions, users: int) -> int:
    if options.processes:
        return min(options.processes, users)
    # One gevent process drives ~500 users at human pace; above that, use the cores.
    return max(1, min(os.cpu_count() or 1, math.ceil(users / 500)))


def _lost_connections(results: list[WorkerResult]) -> bool:
    """Whether requests failed because connections were refused or dropped."""
    return any(key.startswith("connection:") for r in results for key in r.errors)


def _start_at(t0: float, processes: list[subprocess.Popen[bytes]]) -> None:
    """Tell each ready load process to start its users at ``t0`` (time.time()).

    Raises nothing for a process that died after it said ready (killed, the OOM killer):
    its closed pipe is left to the wait that follows, which names it and its log (the
    write ended the step in a BrokenPipeError traceback)."""
    for proc in processes:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(f"go {t0}\n".encode())


def _end(sampler: CpuSampler | None, workers: list[subprocess.Popen[bytes]]) -> None:
    """Stop the step's sampler and load processes, however the step ended: a sampler left
    running (Ctrl-C, a worker that died) sampled the server once a second for the rest of
    the process, and a killed worker stayed a zombie until the next Popen."""
    if sampler is not None:
        sampler.stop()
    for proc in workers:
        if proc.poll() is None:
            proc.kill()
        procs.forget(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def run_step(
    db: Database,
    target: LoadTarget,
    options: LoadOptions,
    weights: dict[str, int],
    identities: list[Identity],
    users: int,
    work: Path,
    run_start: float,
    progress: LoadProgress,
) -> StepResult:
    """Run one step of ``users`` users; returns it (also appended to ``progress``).

    Raises ProbeFailed (a load process failed) and BackendUnavailable (the API or the
    database went away during the step; the step is in ``progress`` first)."""
    count = _processes(options, users)
    _log.info("%d users: starting (%d process(es)), then a %g s window", users, count,
             options.duration_s)  # fmt: skip
    shares = [users // count + (1 if i < users % count else 0) for i in range(count)]
    workers: list[tuple[subprocess.Popen[bytes], Path, WorkerSpec]] = []
    offset = 0
    before = after = None
    gone: BackendUnavailable | None = None
    sampler: CpuSampler | None = None
    try:
        for i, share in enumerate(shares):
            ids = [identities[(offset + k) % len(identities)] for k in range(share)]
            offset += share
            spec = WorkerSpec(
                dsn="" if target.api_url else target.dsn,
                api_url=target.api_url,
                identities=ids,
                users=share,
                mix=weights,
                rate_per_user=options.rate_per_user(users),
                duration_s=options.duration_s,
                spawn_rate=options.spawn_rate / count,
                seed=options.seed * 1000 + i,
                out=str(work / f"step{users}-w{i}.result.json"),
                locust_stats=options.locust_stats,
            )
            log = work / f"step{users}-w{i}.log"
            spec_path = work / f"step{users}-w{i}.spec.json"
            workers.append((procs.spawn(spec, spec_path, log, target.env), log, spec))
        # Connecting at the spawn rate, then each SQL user's warm-up (SqlSession.warm: ~11 s
        # for 1000 users on this 2-core machine), with room for a machine 3x slower.
        ready_timeout = 60 + users / options.spawn_rate * 3 + users * 0.03
        for proc, log, _ in workers:
            procs.event(proc, log, ready_timeout)
        if db.conn is not None:
            before = snapshot(db, target.dsn)
        sampler = CpuSampler(db.server)
        sampler.extra = [psutil.Process(p.pid) for p, _, _ in workers]
        sampler.api = [target.api_process] if target.api_process else []
        sampler.start()
        t0 = time.time() + 0.2
        window_start = time.monotonic() + 0.2 - run_start
        _start_at(t0, [proc for proc, _, _ in workers])
        for proc, log, _ in workers:
            procs.event(proc, log, options.duration_s + 60)
        sampler.stop()
        for proc, _, _ in workers:
            proc.wait(timeout=30)
    finally:
        _end(sampler, [proc for proc, _, _ in workers])
    assert sampler is not None  # set before the window: the try above ran to its end
    results = [WorkerResult.model_validate_json(Path(s.out).read_text()) for _, _, s in workers]
    if target.api_url and _lost_connections(results) and not api_reachable(target.api_url):
        # Every user saw refused or reset connections and the server still refuses them:
        # it went away (stopped, killed). Its errors are not the API's verdict under load.
        gone = BackendUnavailable(
            f"the API went away during the {users}-user step: {redact(target.api_url)}"
            " refuses connections",
            hint="check that the API server runs, then run again",
        )
    elif db.conn is not None:
        # Backends of closed connections flush their counters on exit; an API's pooled
        # connections stay open, and an idle backend that flushed less than 1 s ago
        # keeps the rest for PGSTAT_IDLE_INTERVAL (10 s, PostgreSQL 15+).
        time.sleep(_API_FLUSH_S if target.api_url else 0.5)
        try:
            after = snapshot(db, target.dsn)
        except BackendUnavailable as exc:
            gone = exc
    shape = _Shape(users, count, window_start, "rest" if target.api_url else "sql")
    step = _merge(db, options, weights, shape, results, before, after, sampler)
    progress.steps.append(step)
    if gone is not None:
        raise gone
    _log.info(
        "%d users done: %g ops/s, %d errors, exhaustion %d",
        users,
        step.total.throughput_per_s,
        step.total.errors,
        step.exhaustion,
    )
    return step


@dataclass
class _Shape:
    """What a step was: its users, load processes, window start and transport."""

    users: int
    processes: int
    window_start: float
    transport: Transport


def _merge(
    db: Database,
    options: LoadOptions,
    weights: dict[str, int],
    shape: _Shape,
    results: list[WorkerResult],
    before: dbstats.Snapshot | None,
    after: dbstats.Snapshot | None,
    sampler: CpuSampler,
) -> StepResult:
    """The step merged from its workers' results, with its deltas and CPU."""
    restart = ""
    if before is not None and after is not None:
        deltas = dbstats.delta(before, after, db.note)
        if restart := dbstats.restarted(before, after):
            # The sampler watched the old postmaster's processes, gone since: its CPU is
            # not the server's. The next step watches the new one.
            db.server = local_server(db.conn)
    else:
        note = db.note or ("the database went away before the last snapshot" if before else "")
        deltas = StatsDelta(statements_available=False, statements_note=note)
    secs = options.duration_s
    cpu = cpu_report(sampler, db.server is not None, deltas, secs, note=db.note)
    if restart:
        cpu = CpuReport(method="none", client_mean_pct=cpu.client_mean_pct, note=restart)
    return merge_step(
        results,
        users=shape.users,
        processes=shape.processes,
        mix=weights,
        mode="closed" if options.closed else "fixed-rate",
        rate_per_s=None
        if options.closed
        else (options.rate_per_user(shape.users) or 0) * shape.users,
        duration_s=secs,
        window_start=shape.window_start,
        cpu=cpu,
        deltas=deltas,
        transport=shape.transport,
    )
