"""The parent side of a load run: identities, worker processes, snapshots, CPU, merging.

Lifecycle of one step (N users), driven by :func:`run_load`::

    spawn P worker processes (python -m backend_checks.load.worker), N/P users each
    wait until every user has tried to connect ("ready")
    snapshot the statistics, start CPU sampling, send "go <t0>" to every worker
    wait for "done"; snapshot again; merge the HDR histograms of the workers

Steps run one after the other (100 then 1000 users). Locust and gevent live only in the
worker processes: this module imports neither.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

from backend_checks.db import connect, redact
from backend_checks.load import dbstats, hdr
from backend_checks.load.cpu import CpuSampler, local_server
from backend_checks.load.mix import MixName, mix_weights, operation
from backend_checks.load.models import (
    CpuReport,
    Identity,
    OpStats,
    StepResult,
    WorkerResult,
    WorkerSpec,
)
from devicelab.errors import BadInput, ProbeFailed, UnsafeActionRefused

__all__ = ["LoadOptions", "LoadRun", "fetch_identities", "run_load", "write_spec"]

_IDENTITIES_SQL = """
SELECT u.id::text, (array_agg(c.id::text ORDER BY c.last_message_at DESC NULLS LAST))[1:20]
FROM public.conversations c CROSS JOIN LATERAL unnest(c.participants) AS u(id)
GROUP BY u.id ORDER BY u.id LIMIT %s
"""


class LoadOptions(BaseModel):
    """How to load: the steps, the window, the mix and the pace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: list[int] = Field(default_factory=lambda: [100, 1000], min_length=1)
    duration_s: float = Field(60.0, gt=0)
    mix: MixName = "full"
    closed: bool = Field(False, description="closed loop: each user sends back to back")
    rate: float | None = Field(None, gt=0, description="total ops/s (fixed-rate mode)")
    per_user_rate: float = Field(0.2, gt=0, description="ops/s per user when rate is unset")
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


def fetch_identities(conn: Any, count: int) -> list[Identity]:
    """Up to ``count`` users that are in at least one conversation, with their
    conversations. Raises BadInput when the database holds none."""
    rows = conn.execute(_IDENTITIES_SQL, (count,)).fetchall()
    if not rows:
        raise BadInput(
            "the database has no conversations to load",
            hint="generate data first: devicelab backend datagen --messages 100000 --allow-writes",
        )
    return [
        Identity(
            user_id=uid,
            claims=json.dumps({"sub": uid, "role": "authenticated", "aud": "authenticated"}),
            conversations=list(convs),
        )
        for uid, convs in rows
    ]


def write_spec(dsn: str, options: LoadOptions, users: int, path: Path) -> Path:
    """Write the WorkerSpec of a ``users`` step for Locust's own master/worker mode
    (``DEVICELAB_LOAD_SPEC``); every worker process runs the users Locust gives it.

    Raises UnsafeActionRefused, BadInput, BackendUnavailable as :func:`run_load`.
    """
    weights = mix_weights(options.mix)
    _refuse_writes(options, weights)
    with connect(dsn, autocommit=True) as conn:
        identities = fetch_identities(conn, users)
    spec = WorkerSpec(
        dsn=dsn,
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


def _refuse_writes(options: LoadOptions, weights: dict[str, int]) -> None:
    if any(operation(n).writes for n in weights) and not options.allow_writes:
        raise UnsafeActionRefused(
            "the full mix sends messages and marks them read: refused without --allow-writes",
            hint="add --allow-writes (a scratch database), or --mix read",
        )


def run_load(dsn: str, options: LoadOptions, *, workdir: Path | None = None) -> LoadRun:
    """Run every step of ``options`` against ``dsn``; returns the LoadRun.

    Raises UnsafeActionRefused (a writing mix without ``allow_writes``), BadInput (no data),
    BackendUnavailable (the server cannot be reached by us), ProbeFailed (a load process
    failed). Connection exhaustion of the simulated users is measured, not raised.
    """
    weights = mix_weights(options.mix)
    _refuse_writes(options, weights)
    started_at = datetime.now(UTC)
    run_start = time.monotonic()
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="devicelab-load-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    import psycopg

    with connect(dsn, autocommit=True) as conn:
        try:
            identities = fetch_identities(conn, max(options.users))
            schema, note = dbstats.ensure_statements(conn, allow_writes=options.allow_writes)
        except psycopg.Error as exc:
            raise BadInput(
                f"cannot read the messaging schema: {redact(str(exc).splitlines()[0], dsn)}",
                hint="install it: devicelab backend datagen --messages 100000 --allow-writes",
            ) from None
        server = local_server(conn)
        steps = []
        for users in options.users:
            steps.append(
                _step(
                    conn,
                    dsn,
                    options,
                    weights,
                    identities,
                    users,
                    schema,
                    note,
                    server,
                    work,
                    run_start,
                )
            )
    if own_dir:
        for path in work.iterdir():
            path.unlink()
        work.rmdir()
    return LoadRun(
        target=redact(dsn, dsn),
        started_at=started_at,
        finished_at=datetime.now(UTC),
        options=options,
        identities=len(identities),
        steps=steps,
    )


def _processes(options: LoadOptions, users: int) -> int:
    if options.processes:
        return min(options.processes, users)
    # One gevent process drives ~500 users at human pace; above that, use the cores.
    return max(1, min(os.cpu_count() or 1, math.ceil(users / 500)))


def _spawn(spec: WorkerSpec, path: Path, log: Path) -> subprocess.Popen[bytes]:
    path.write_text(spec.model_dump_json())
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "backend_checks.load.worker", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            bufsize=0,
            env=env,
        )


def _event(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> dict[str, Any]:
    """The next protocol line of a worker (other output on its stdout is skipped).

    Reads the pipe unbuffered, so a line already read is never left behind in a buffer
    that ``select`` cannot see. Raises ProbeFailed (with the tail of its log) when the
    worker exits or stays silent too long.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pending = _PENDING.setdefault(proc.pid, b"")
    deadline = time.monotonic() + timeout_s
    while True:
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            _PENDING[proc.pid] = pending
            if line.startswith(b'{"event"'):
                event: dict[str, Any] = json.loads(line)
                return event
        left = deadline - time.monotonic()
        ready = select.select([fd], [], [], left)[0] if left > 0 else []
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            break
        pending += chunk
    proc.kill()
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    raise ProbeFailed(
        "a load process stopped or did not answer in time",
        hint=f"see {log}",
        command=" ".join(str(a) for a in proc.args),  # type: ignore[union-attr]
        stderr="\n".join(tail),
    )


#: Bytes read from each worker's stdout past its last protocol line, by pid.
_PENDING: dict[int, bytes] = {}


def _step(
    conn: Any,
    dsn: str,
    options: LoadOptions,
    weights: dict[str, int],
    identities: list[Identity],
    users: int,
    schema: str,
    note: str,
    server: psutil.Process | None,
    work: Path,
    run_start: float,
) -> StepResult:
    count = _processes(options, users)
    shares = [users // count + (1 if i < users % count else 0) for i in range(count)]
    procs: list[tuple[subprocess.Popen[bytes], Path, WorkerSpec]] = []
    offset = 0
    try:
        for i, share in enumerate(shares):
            ids = [identities[(offset + k) % len(identities)] for k in range(share)]
            offset += share
            spec = WorkerSpec(
                dsn=dsn,
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
            procs.append((_spawn(spec, work / f"step{users}-w{i}.spec.json", log), log, spec))
        ready_timeout = 60 + users / options.spawn_rate * 3
        for proc, log, _ in procs:
            _event(proc, log, ready_timeout)
        before = dbstats.snapshot(conn, schema)
        sampler = CpuSampler(server)
        sampler.extra = [psutil.Process(p.pid) for p, _, _ in procs]
        sampler.start()
        t0 = time.time() + 0.2
        window_start = time.monotonic() + 0.2 - run_start
        for proc, _, _ in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"go {t0}\n".encode())
        for proc, log, _ in procs:
            _event(proc, log, options.duration_s + 60)
        sampler.stop()
        for proc, _, _ in procs:
            proc.wait(timeout=30)
        time.sleep(0.5)  # backends of the closed connections flush their counters on exit
        after = dbstats.snapshot(conn, schema)
    finally:
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.kill()
            _PENDING.pop(proc.pid, None)
    results = [WorkerResult.model_validate_json(Path(s.out).read_text()) for _, _, s in procs]
    deltas = dbstats.delta(before, after, note)
    return _merge(options, weights, users, count, results, sampler, server, deltas, window_start)


def _op_stats(
    latency: list[str], service: list[str], ok: int, errors: int, late: int, secs: float
) -> OpStats:
    merged = hdr.merge(latency)
    return OpStats(
        count=ok + errors,
        errors=errors,
        throughput_per_s=round((ok - late) / secs, 2),
        service_p95_ms=round(hdr.summary_ms(hdr.merge(service))["p95_ms"], 3),
        **{k: round(v, 3) for k, v in hdr.summary_ms(merged).items()},
    )


def _merge(
    options: LoadOptions,
    weights: dict[str, int],
    users: int,
    processes: int,
    results: list[WorkerResult],
    sampler: CpuSampler,
    server: psutil.Process | None,
    deltas: Any,
    window_start: float,
) -> StepResult:
    secs = options.duration_s
    ops = {
        name: _op_stats(
            [r.ops[name].latency_hdr for r in results],
            [r.ops[name].service_hdr for r in results],
            sum(r.ops[name].ok for r in results),
            sum(r.ops[name].errors for r in results),
            sum(r.ops[name].late for r in results),
            secs,
        )
        for name in weights
    }
    total = _op_stats(
        [r.ops[n].latency_hdr for r in results for n in weights],
        [r.ops[n].service_hdr for r in results for n in weights],
        sum(o.count - o.errors for o in ops.values()),
        sum(o.errors for o in ops.values()),
        sum(r.ops[n].late for r in results for n in weights),
        secs,
    )
    errors: dict[str, int] = {}
    for r in results:
        for key, n in r.errors.items():
            errors[key] = errors.get(key, 0) + n
    timeline_t, timeline_tp, timeline_p95 = [], [], []
    for second in range(math.ceil(secs)):
        tallies = [s for r in results for s in r.seconds if s.t == second]
        timeline_t.append(round(window_start + second + 1, 3))
        timeline_tp.append(float(sum(s.ok for s in tallies)))
        p95 = hdr.summary_ms(hdr.merge(s.latency_hdr for s in tallies))["p95_ms"]
        timeline_p95.append(round(p95, 3))
    return StepResult(
        users=users,
        processes=processes,
        mix=weights,
        mode="closed" if options.closed else "fixed-rate",
        rate_per_s=None if options.closed else (options.rate_per_user(users) or 0) * users,
        duration_s=secs,
        started_s=round(window_start, 3),
        connected=sum(r.connected for r in results),
        connect_failures=sum(r.connect_failures for r in results),
        exhaustion=sum(r.exhaustion for r in results),
        missed=sum(r.missed for r in results),
        ops=ops,
        total=total,
        errors=errors,
        cpu=_cpu_report(sampler, server, deltas, secs),
        deltas=deltas,
        timeline_t=timeline_t,
        timeline_throughput=timeline_tp,
        timeline_p95_ms=timeline_p95,
    )


def _cpu_report(
    sampler: CpuSampler, server: psutil.Process | None, deltas: Any, secs: float
) -> CpuReport:
    client = sampler.mean_pct(extra=True)
    busy = (
        round(deltas.statements_exec_ms / 1000 / secs, 3) if deltas.statements_available else None
    )
    if server is not None and sampler.pct:
        return CpuReport(
            method="psutil",
            mean_pct=sampler.mean_pct(),
            max_pct=max(sampler.pct),
            cores=sampler.cores,
            busy_backends=busy,
            client_mean_pct=client,
            t=sampler.t,
            pct=sampler.pct,
        )
    if busy is not None:
        return CpuReport(
            method="pg_stat_statements",
            busy_backends=busy,
            client_mean_pct=client,
            note="remote server: busy backends = execution time / wall time; "
            "read the provider's CPU metric for this window for a percentage",
        )
    return CpuReport(
        method="none",
        client_mean_pct=client,
        note="remote server and no pg_stat_statements: use the provider's CPU metric",
    )
