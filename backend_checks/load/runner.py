"""The parent side of a load run: identities, worker processes, snapshots, CPU, merging.

Lifecycle of one step (N users), driven by :func:`run_load` (SQL) or
``backend_checks.load.api.run_rest_load`` (HTTP)::

    spawn P worker processes (python -m backend_checks.load.worker), N/P users each
    wait until every user has tried to connect or sign in ("ready")
    snapshot the statistics, start CPU sampling, send "go <t0>" to every worker
    wait for "done"; snapshot again; merge the HDR histograms of the workers

Steps run one after the other (100 then 1000 users). Locust and gevent live only in the
worker processes: this module imports neither.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

from backend_checks.db import connect, redact
from backend_checks.load import dbstats, procs
from backend_checks.load.cpu import CpuSampler, local_server
from backend_checks.load.merge import cpu_report, merge_step
from backend_checks.load.mix import MixName, mix_weights, operation
from backend_checks.load.models import (
    CpuReport,
    Identity,
    StatsDelta,
    StepResult,
    WorkerResult,
    WorkerSpec,
)
from devicelab.errors import (
    BackendUnavailable,
    BadInput,
    ProbeFailed,
    UnsafeActionRefused,
    first_line,
)

__all__ = [
    "DEFAULT_ACCOUNTS",
    "LoadOptions",
    "LoadRun",
    "LoadTarget",
    "fetch_identities",
    "generated_identities",
    "run_load",
    "write_spec",
]

_log = logging.getLogger(__name__)

_IDENTITIES_SQL = """
SELECT u.id::text, (array_agg(c.id::text ORDER BY c.last_message_at DESC NULLS LAST))[1:20]
FROM public.conversations c CROSS JOIN LATERAL unnest(c.participants) AS u(id)
GROUP BY u.id ORDER BY u.id LIMIT %s
"""
_EMAILS_SQL = "SELECT id::text, email FROM auth.users WHERE id::text = ANY(%s)"
#: Generated users signed in over HTTP without a DSN, unless told: the reference server
#: seeds 100, datagen makes 1000 by default; users beyond share their sessions.
DEFAULT_ACCOUNTS = 100
#: Wait before the last snapshot of an HTTP step: an API's idle pooled backends flush
#: their table counters within 10 s (measured: after 1.5 s one insert of 17 was still missing).
_API_FLUSH_S = 10.5


class LoadOptions(BaseModel):
    """How to load: the steps, the window, the mix and the pace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: list[int] = Field(default_factory=lambda: [100, 1000], min_length=1)
    duration_s: float = Field(60.0, gt=0)
    mix: MixName = "full"
    closed: bool = Field(False, description="closed loop: each user sends back to back")
    # Finite: an infinite rate has no schedule (every interval is 0).
    rate: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="total ops/s (fixed-rate mode)"
    )
    per_user_rate: float = Field(
        0.2, gt=0, allow_inf_nan=False, description="ops/s per user when rate is unset"
    )
    processes: int | None = Field(None, ge=1, description="load processes (default: by users)")
    spawn_rate: float = Field(250.0, gt=0, description="users connected per second")
    allow_writes: bool = False
    seed: int = 1
    locust_stats: bool = Field(False, description="also fire Locust's request events")

    def rate_per_user(self, users: int) -> float | None:
        """The ops/s each of ``users`` aims at, or None in the closed loop."""
        if self.closed:
            return None
        return self.rate / users if self.rate else self.per_user_rate


class LoadRun(BaseModel):
    """A whole load run: where, when, how, and one StepResult per step."""

    target: str
    started_at: datetime
    finished_at: datetime
    options: LoadOptions
    identities: int
    steps: list[StepResult]
    notes: list[str] = Field(default_factory=list, description="what was not measured, and why")


@dataclass
class LoadTarget:
    """Where the users go: a DSN (SQL), or an API URL with an optional DSN for the
    identities, the statistics deltas and the database CPU.

    ``env`` is handed to the load processes only (API key, password); ``api_process``
    is a local API server whose CPU is reported apart (the reference server).
    """

    label: str
    dsn: str = field(default="", repr=False)
    api_url: str = ""
    accounts: int = 0
    env: dict[str, str] = field(default_factory=dict, repr=False)
    api_process: psutil.Process | None = None
    no_dsn_note: str = ""


def fetch_identities(conn: Any, count: int, *, emails: bool = False) -> list[Identity]:
    """Up to ``count`` users that are in at least one conversation, with their
    conversations (and their sign-in emails when ``emails``: users without one are left
    out). Raises BadInput when the database holds none."""
    rows = conn.execute(_IDENTITIES_SQL, (count,)).fetchall()
    found = {}
    if emails and rows:
        found = dict(conn.execute(_EMAILS_SQL, ([r[0] for r in rows],)).fetchall())
        rows = [r for r in rows if found.get(r[0])]
    if not rows:
        sees_all = conn.execute(
            "SELECT rolsuper OR rolbypassrls OR pg_has_role(current_user,"
            " (SELECT relowner FROM pg_class WHERE oid = 'public.conversations'::regclass),"
            " 'USAGE') FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if sees_all is not None and not sees_all[0]:
            # Row-level security shows this role none of the conversations there may be.
            raise BadInput(
                "no conversations are visible to the DSN's user (row-level security applies to it)",
                hint="connect as the tables' owner or a role with BYPASSRLS (e.g. postgres):"
                " the users' identities are read before they act as themselves",
            )
        raise BadInput(
            "the database has no conversations to load",
            hint="generate data first: devicelab backend datagen --dsn DSN --messages 100000"
            " --allow-writes",
        )
    return [
        Identity(
            user_id=uid,
            claims=json.dumps({"sub": uid, "role": "authenticated", "aud": "authenticated"}),
            conversations=list(convs),
            email=str(found.get(uid) or ""),
        )
        for uid, convs in rows
    ]


def write_spec(dsn: str, options: LoadOptions, users: int, path: Path) -> Path:
    """Write the WorkerSpec of a ``users`` step for Locust's own master/worker mode
    (``DEVICELAB_LOAD_SPEC``); every worker process runs the users Locust gives it.

    Raises UnsafeActionRefused, BadInput, BackendUnavailable as :func:`run_load`.
    """
    weights = mix_weights(options.mix)
    refuse_writes(options, weights)
    with connect(dsn, autocommit=True) as conn:
        identities = fetch_identities(conn, users)
    return spec_file(path, options, users, weights, identities, dsn=dsn)


def spec_file(
    path: Path,
    options: LoadOptions,
    users: int,
    weights: dict[str, int],
    identities: list[Identity],
    *,
    dsn: str = "",
    api_url: str = "",
) -> Path:
    """Write the WorkerSpec of a step to ``path`` (users speak SQL to ``dsn`` or HTTP to
    ``api_url``); returns ``path``."""
    spec = WorkerSpec(
        dsn=dsn,
        api_url=api_url,
        identities=identities,
        users=users,
        mix=weights,
        rate_per_user=options.rate_per_user(users),
        duration_s=options.duration_s,
        spawn_rate=options.spawn_rate,
        seed=options.seed,
        out="",
    )
    path.write_text(spec.model_dump_json())
    return path


def refuse_writes(options: LoadOptions, weights: dict[str, int]) -> None:
    """Raise UnsafeActionRefused when the mix writes and writes were not allowed."""
    if any(operation(n).writes for n in weights) and not options.allow_writes:
        raise UnsafeActionRefused(
            "the full mix sends messages and marks them read: refused without --allow-writes",
            hint="add --allow-writes (a scratch database; one holding only a `backend datagen`"
            " data set needs none), or --mix read",
        )


def run_load(dsn: str, options: LoadOptions, *, workdir: Path | None = None) -> LoadRun:
    """Run every step of ``options`` against ``dsn`` (the users speak SQL); returns the
    LoadRun.

    Raises UnsafeActionRefused (a writing mix without ``allow_writes``), BadInput (no data),
    BackendUnavailable (the server cannot be reached by us), ProbeFailed (a load process
    failed). Connection exhaustion of the simulated users is measured, not raised.
    """
    return run_target(LoadTarget(label=redact(dsn, dsn), dsn=dsn), options, workdir=workdir)


def generated_identities(accounts: int) -> list[Identity]:
    """The generated users ``testuser1..accounts@example.com`` (they sign in over HTTP)."""
    return [Identity(email=f"testuser{i}@example.com") for i in range(1, accounts + 1)]


def run_target(target: LoadTarget, options: LoadOptions, *, workdir: Path | None = None) -> LoadRun:
    """Run every step of ``options`` against ``target`` (see :func:`run_load`)."""
    weights = mix_weights(options.mix)
    if not target.dsn:
        refuse_writes(options, weights)
    started_at = datetime.now(UTC)
    run_start = time.monotonic()
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="devicelab-load-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    http = bool(target.api_url)
    try:
        if not target.dsn:
            accounts = target.accounts or min(max(options.users), DEFAULT_ACCOUNTS)
            identities = generated_identities(accounts)
            db = _Database(None, "", target.no_dsn_note, None)
            steps = [_step(db, target, options, weights, identities, users, work, run_start)
                     for users in options.users]  # fmt: skip
        else:
            with connect(target.dsn, autocommit=True) as conn:
                # The schema is read first (read only): on a database without one, the
                # refusal would only send the user to --allow-writes and a second error.
                identities, db = _database(conn, target, options, emails=http)
                refuse_writes(options, weights)
                try:
                    steps = [_step(db, target, options, weights, identities, users, work,
                                   run_start) for users in options.users]  # fmt: skip
                finally:
                    if db.conn is not conn:
                        db.conn.close()
    finally:
        if own_dir:
            # A load process that failed keeps its log (the error's hint names it); the
            # specs (a DSN may carry a password) and the results go.
            keep = sys.exc_info()[0] is ProbeFailed
            for path in work.iterdir():
                if not (keep and path.suffix == ".log"):
                    path.unlink()
            if not keep:
                work.rmdir()
    notes = [target.no_dsn_note] if not target.dsn and target.no_dsn_note else []
    if target.dsn and len(identities) < max(options.users):
        notes.append(
            f"the database has {len(identities)} users in conversations: the "
            f"{max(options.users)} simulated users share them (generate more with datagen"
            " --users for one app user each)"
        )
    return LoadRun(
        target=target.label,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        options=options,
        identities=len(identities),
        steps=steps,
        notes=notes,
    )


@dataclass
class _Database:
    """Our own connection to the loaded database, when we have one."""

    conn: Any
    schema: str
    note: str
    server: psutil.Process | None


def _database(
    conn: Any, target: LoadTarget, options: LoadOptions, *, emails: bool
) -> tuple[list[Identity], _Database]:
    import psycopg

    try:
        identities = fetch_identities(conn, max(options.users), emails=emails)
    except psycopg.Error as exc:
        raise BadInput(
            f"cannot read the messaging schema: {redact(str(exc).splitlines()[0], target.dsn)}",
            hint="install it: devicelab backend datagen --dsn DSN --messages 100000"
            " --allow-writes (a scratch database)",
        ) from None
    try:
        schema, note = dbstats.ensure_statements(conn, allow_writes=options.allow_writes)
    except psycopg.Error as exc:
        # The statement statistics are evidence, not the load: the run goes on without.
        reason = redact(first_line(exc), target.dsn)
        schema, note = "", f"statement statistics are not available ({reason})"
    return identities, _Database(conn, schema, note, local_server(conn))


def _snapshot(db: _Database, dsn: str) -> dbstats.Snapshot:
    """The statistics now. Our connection sits idle through the window, so the server may
    have closed it (idle_session_timeout, a restart, pg_terminate_backend): then once more
    on a new one. Raises BackendUnavailable when the server is gone."""
    import psycopg

    try:
        return dbstats.snapshot(db.conn, db.schema)
    except psycopg.OperationalError:
        if not (db.conn.closed or db.conn.broken):
            raise
    db.conn = connect(dsn, autocommit=True)
    try:
        return dbstats.snapshot(db.conn, db.schema)
    except psycopg.OperationalError as exc:
        raise BackendUnavailable(
            f"the database went away during the load: {redact(first_line(exc), dsn)}",
            hint="check that the server runs (and its idle_session_timeout), then run again",
        ) from None


def _processes(options: LoadOptions, users: int) -> int:
    if options.processes:
        return min(options.processes, users)
    # One gevent process drives ~500 users at human pace; above that, use the cores.
    return max(1, min(os.cpu_count() or 1, math.ceil(users / 500)))


def _step(
    db: _Database,
    target: LoadTarget,
    options: LoadOptions,
    weights: dict[str, int],
    identities: list[Identity],
    users: int,
    work: Path,
    run_start: float,
) -> StepResult:
    count = _processes(options, users)
    _log.info("%d users: starting (%d process(es)), then a %g s window", users, count,
             options.duration_s)  # fmt: skip
    shares = [users // count + (1 if i < users % count else 0) for i in range(count)]
    workers: list[tuple[subprocess.Popen[bytes], Path, WorkerSpec]] = []
    offset = 0
    before = after = None
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
        ready_timeout = 60 + users / options.spawn_rate * 3
        for proc, log, _ in workers:
            procs.event(proc, log, ready_timeout)
        if db.conn is not None:
            before = _snapshot(db, target.dsn)
        sampler = CpuSampler(db.server)
        sampler.extra = [psutil.Process(p.pid) for p, _, _ in workers]
        sampler.api = [target.api_process] if target.api_process else []
        sampler.start()
        t0 = time.time() + 0.2
        window_start = time.monotonic() + 0.2 - run_start
        for proc, _, _ in workers:
            assert proc.stdin is not None
            proc.stdin.write(f"go {t0}\n".encode())
        for proc, log, _ in workers:
            procs.event(proc, log, options.duration_s + 60)
        sampler.stop()
        for proc, _, _ in workers:
            proc.wait(timeout=30)
        if db.conn is not None:
            # Backends of closed connections flush their counters on exit; an API's pooled
            # connections stay open, and an idle backend that flushed less than 1 s ago
            # keeps the rest for PGSTAT_IDLE_INTERVAL (10 s, PostgreSQL 15+).
            time.sleep(_API_FLUSH_S if target.api_url else 0.5)
            after = _snapshot(db, target.dsn)
    finally:
        for proc, _, _ in workers:
            if proc.poll() is None:
                proc.kill()
            procs.forget(proc)
    results = [WorkerResult.model_validate_json(Path(s.out).read_text()) for _, _, s in workers]
    restart = ""
    if before is not None and after is not None:
        deltas = dbstats.delta(before, after, db.note)
        if restart := dbstats.restarted(before, after):
            # The sampler watched the old postmaster's processes, gone since: its CPU is
            # not the server's. The next step watches the new one.
            db.server = local_server(db.conn)
    else:
        deltas = StatsDelta(statements_available=False, statements_note=db.note)
    secs = options.duration_s
    cpu = cpu_report(sampler, db.server is not None, deltas, secs, note=db.note)
    if restart:
        cpu = CpuReport(method="none", client_mean_pct=cpu.client_mean_pct, note=restart)
    step = merge_step(
        results,
        users=users,
        processes=count,
        mix=weights,
        mode="closed" if options.closed else "fixed-rate",
        rate_per_s=None if options.closed else (options.rate_per_user(users) or 0) * users,
        duration_s=secs,
        window_start=window_start,
        cpu=cpu,
        deltas=deltas,
        transport="rest" if target.api_url else "sql",
    )
    _log.info(
        "%d users done: %g ops/s, %d errors, exhaustion %d",
        users,
        step.total.throughput_per_s,
        step.total.errors,
        step.exhaustion,
    )
    return step
