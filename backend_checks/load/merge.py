"""Merge what the load processes recorded into one StepResult (and the CPU report).

Latencies come from the merged HDR histograms, never from averaged percentiles. The
local runner and ``--import`` of a Locust master's result both end here.
"""

from __future__ import annotations

import math
from typing import Literal

from backend_checks.load import hdr
from backend_checks.load.cpu import CpuSampler
from backend_checks.load.models import (
    CpuReport,
    OpStats,
    StatsDelta,
    StepResult,
    Transport,
    WorkerResult,
)

__all__ = ["cpu_report", "merge_step"]


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


def merge_step(
    results: list[WorkerResult],
    *,
    users: int,
    processes: int,
    mix: dict[str, int],
    mode: Literal["fixed-rate", "closed"],
    rate_per_s: float | None,
    duration_s: float,
    window_start: float,
    cpu: CpuReport,
    deltas: StatsDelta,
    transport: Transport = "sql",
    lost_workers: list[str] | None = None,
) -> StepResult:
    """One step from its processes' results (operations of ``mix`` missing in a result
    count as nothing recorded); ``lost_workers`` names load processes that were lost."""
    secs = duration_s
    empty: dict[str, str | int] = {
        "latency_hdr": "",
        "service_hdr": "",
        "ok": 0,
        "errors": 0,
        "late": 0,
    }

    def tally(r: WorkerResult, name: str, field: str) -> str | int:
        op = r.ops.get(name)
        value: str | int = getattr(op, field) if op is not None else empty[field]
        return value

    ops = {
        name: _op_stats(
            [str(tally(r, name, "latency_hdr")) for r in results],
            [str(tally(r, name, "service_hdr")) for r in results],
            sum(int(tally(r, name, "ok")) for r in results),
            sum(int(tally(r, name, "errors")) for r in results),
            sum(int(tally(r, name, "late")) for r in results),
            secs,
        )
        for name in mix
    }
    total = _op_stats(
        [str(tally(r, n, "latency_hdr")) for r in results for n in mix],
        [str(tally(r, n, "service_hdr")) for r in results for n in mix],
        sum(o.count - o.errors for o in ops.values()),
        sum(o.errors for o in ops.values()),
        sum(int(tally(r, n, "late")) for r in results for n in mix),
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
        mix=mix,
        transport=transport,
        mode=mode,
        rate_per_s=rate_per_s,
        duration_s=secs,
        started_s=round(window_start, 3),
        connected=sum(r.connected for r in results),
        # Older results carry no peak: unknown, not 0.
        peak_connected=sum(r.peak_connected for r in results)
        if any(r.peak_connected for r in results)
        else None,
        lost_workers=list(lost_workers or []),
        connect_failures=sum(r.connect_failures for r in results),
        exhaustion=sum(r.exhaustion for r in results),
        missed=sum(r.missed for r in results),
        ops=ops,
        total=total,
        errors=errors,
        cpu=cpu,
        deltas=deltas,
        timeline_t=timeline_t,
        timeline_throughput=timeline_tp,
        timeline_p95_ms=timeline_p95,
    )


def cpu_report(
    sampler: CpuSampler, local: bool, deltas: StatsDelta, secs: float, *, note: str = ""
) -> CpuReport:
    """Database CPU of a step: psutil on a local server, else busy backends from
    pg_stat_statements, else nothing (``note`` says why)."""
    client = sampler.mean_pct(extra=True)
    api = sampler.mean_pct(api=True)
    busy = (
        round(deltas.statements_exec_ms / 1000 / secs, 3) if deltas.statements_available else None
    )
    if local and sampler.pct:
        return CpuReport(
            method="psutil",
            mean_pct=sampler.mean_pct(),
            max_pct=max(sampler.pct),
            cores=sampler.cores,
            busy_backends=busy,
            client_mean_pct=client,
            api_mean_pct=api,
            t=sampler.t,
            pct=sampler.pct,
        )
    if busy is not None:
        return CpuReport(
            method="pg_stat_statements",
            busy_backends=busy,
            client_mean_pct=client,
            api_mean_pct=api,
            note="remote server: busy backends = execution time / wall time; "
            "read the provider's CPU metric for this window for a percentage",
        )
    return CpuReport(
        method="none",
        client_mean_pct=client,
        api_mean_pct=api,
        note=note or "remote server and no pg_stat_statements: use the provider's CPU metric",
    )
