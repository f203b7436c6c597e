"""What "N concurrent users supported" means, and the load_100 / load_1000 checks.

A step of N users *supports* N when every criterion holds (the story's Load Testing
checklist and its query targets):

1. all users connected and ran the mix (distinct users, not attempts: a reconnect is the
   same user; and, where known, all of them connected at once), and no load process
   was lost (a Locust worker killed or cut off mid-run);
2. the error rate is below ``max_error_rate`` (1 %) (a window without any request fails
   with that said);
3. no connection exhaustion ("too many clients", a role's connection limit, pool
   timeouts): the story's "No connection pool exhaustion";
4. per operation, p95 latency of its successful requests (from the intended start) within
   the story's query target of that operation (one none of whose requests succeeded
   fails on its errors) (message fetch < 50 ms, conversation list < 100 ms, search < 200 ms,
   send_message < 100 ms, mark_as_read < 50 ms);
5. database CPU (mean over the window, share of the machine) below 80 %: "Database CPU <
   80% under load" (not judged on a remote server without a CPU metric);
6. in fixed-rate mode, the achieved throughput is at least ``min_rate_share`` (90 %) of
   the intended rate: the server kept the pace (not judged when the window schedules
   fewer than ``min_scheduled`` (20) requests: a share of a handful is the window's edges).

The check's value is the number of users supported: the step's N when it passes, else the
largest smaller step that passed (0 if none), judged against the target (>= 100, >= 1000).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from backend_checks.backend_info import BackendKind, backend_info
from backend_checks.load.mix import operation
from backend_checks.load.models import Criterion, StepResult
from backend_checks.load.runner import LoadRun
from devicelab.models import Check, Results, RunInfo, Series, Target, TargetBook
from devicelab.targets import judge, resolve

__all__ = [
    "LOAD_CHECKS",
    "SupportRules",
    "judge_step",
    "load_checks",
    "step_evidence",
    "to_results",
]

LOAD_CHECKS: tuple[tuple[str, str], ...] = (
    ("load_100", "100 concurrent users supported"),
    ("load_1000", "1000 concurrent users supported"),
)


class SupportRules(BaseModel):
    """The thresholds of "supported" that the story leaves open."""

    model_config = ConfigDict(frozen=True)

    max_error_rate: float = 0.01
    max_db_cpu_pct: float = 80.0
    min_rate_share: float = 0.9
    #: The fewest requests a window must schedule for the rate share to be judged.
    min_scheduled: int = 20


def judge_step(
    step: StepResult, book: TargetBook, rules: SupportRules | None = None
) -> list[Criterion]:
    """The criteria of "supported" for one step, each with its verdict and value."""
    rules = rules or SupportRules()
    peak = step.peak_connected
    at_once = "" if peak is None else f"; at most {peak} connected at once"
    if peak is not None and step.processes > 1:
        # Each process reports its own peak, reached at its own moment: their sum bounds
        # the peak at once from above (a tester read 98 "at once" under a limit of 50).
        at_once = (
            f"; up to {peak} connected at once (the sum of each of the {step.processes}"
            " load processes' peaks)"
        )
    out = [
        Criterion(
            name="all users connected",
            ok=step.connected >= step.users and (peak is None or peak >= step.users),
            value=step.connected,
            limit=f">= {step.users}",
            detail=f"{step.connect_failures} failed connection attempts{at_once}",
        )
    ]
    if step.lost_workers:
        out.append(
            Criterion(
                name="no load process lost",
                ok=False,
                value=len(step.lost_workers),
                limit="== 0",
                detail="stopped reporting before the end (their users' requests stopped"
                " with them): " + ", ".join(step.lost_workers)[:300],
            )
        )
    count = step.total.count
    rate = step.total.errors / count if count else 0.0
    out.append(
        Criterion(
            name="error rate",
            ok=count > 0 and rate < rules.max_error_rate,
            value=round(100 * rate, 3) if count else None,
            limit=f"< {100 * rules.max_error_rate:g} %",
            detail=f"{step.total.errors} of {count} requests failed"
            if count
            else "no request was made in the window",
        )
    )
    out.append(
        Criterion(
            name="no connection exhaustion",
            ok=step.exhaustion == 0,
            value=step.exhaustion,
            limit="== 0",
            detail="; ".join(k for k in step.errors if k.startswith("exhaustion"))[:300],
        )
    )
    for name, stats in step.ops.items():
        target = resolve(book, operation(name).target_check, "backend", "any")
        if target is None or target.value is None:
            continue
        ran = stats.count > 0  # a short window may hold none of a rare operation
        timed = stats.count > stats.errors  # the histograms hold successes only
        detail = target.source
        if not ran:
            detail = "not judged: none ran in the window"
        elif not timed:
            detail = f"all {stats.errors} requests failed: no latency to judge"
        out.append(
            Criterion(
                name=f"p95 {name}",
                ok=(timed and target.holds(stats.p95_ms)) if ran else None,
                value=stats.p95_ms if timed else None,
                limit=f"{target.op} {target.value:g} {target.unit}",
                detail=detail,
            )
        )
    cpu = step.cpu
    out.append(
        Criterion(
            name="database CPU",
            ok=None if cpu.mean_pct is None else cpu.mean_pct < rules.max_db_cpu_pct,
            value=cpu.mean_pct,
            limit=f"< {rules.max_db_cpu_pct:g} %",
            detail=cpu.note
            or f"mean over the window (max 1 s sample {cpu.max_pct} %), {cpu.method}",
        )
    )
    if step.rate_per_s:
        achieved = step.total.throughput_per_s
        scheduled = step.rate_per_s * step.duration_s
        # A share of a handful is a matter of where the window's edges fall (2 scheduled
        # requests of a 1 s window, 1 sent: "50 %"), not of the server's pace.
        judged = scheduled >= rules.min_scheduled
        detail = (
            f"intended {step.rate_per_s:g} ops/s; {step.missed} scheduled "
            "requests not sent before the window closed"
        )
        if not judged:
            detail = (
                f"not judged: {scheduled:g} requests scheduled in the {step.duration_s:g} s"
                f" window are too few to judge a {rules.min_rate_share:.0%} share (fewer than"
                f" {rules.min_scheduled}): a longer --duration judges it"
            )
        out.append(
            Criterion(
                name="throughput kept the intended rate",
                ok=achieved >= rules.min_rate_share * step.rate_per_s if judged else None,
                value=achieved,
                limit=f">= {rules.min_rate_share * step.rate_per_s:g} ops/s",
                detail=detail,
            )
        )
    return out


def step_evidence(step: StepResult, criteria: list[Criterion]) -> dict[str, Any]:
    """The evidence of one step: criteria, per-op latency, throughput, errors, CPU, deltas."""
    cpu = step.cpu.model_dump(exclude={"t", "pct"})
    return {
        "users": step.users,
        "processes": step.processes,
        "transport": "HTTP /rest/v1 (supabase-js requests)"
        if step.transport == "rest"
        else "SQL (as PostgREST runs it)",
        "mode": step.mode,
        "intended_rate_per_s": step.rate_per_s,
        "duration_s": step.duration_s,
        "mix": step.mix,
        "criteria": [c.model_dump() for c in criteria],
        "operations": {name: op.model_dump() for name, op in step.ops.items()},
        "total": step.total.model_dump(),
        "connected": step.connected,
        "peak_connected": step.peak_connected,
        "lost_workers": step.lost_workers,
        "connect_failures": step.connect_failures,
        "exhaustion": step.exhaustion,
        "missed": step.missed,
        "errors": step.errors,
        "db_cpu": cpu,
        "pg_stat_statements_delta": step.deltas.model_dump(exclude={"tables"}),
        "pg_stat_user_tables_delta": step.deltas.tables,
        "latency": "HDR histograms, from each request's intended start (ms)",
    }


def _passed(criteria: list[Criterion]) -> bool:
    return all(c.ok is not False for c in criteria)


def _story_users(check_id: str) -> int:
    """The users a story load check is about: 1000 for ``load_1000``."""
    return int(check_id.rsplit("_", 1)[1])


def load_checks(
    run: LoadRun, book: TargetBook, rules: SupportRules | None = None
) -> tuple[list[Check], list[Series]]:
    """The load_100 and load_1000 checks of ``run`` and its series (throughput, p95, CPU)."""
    rules = rules or SupportRules()
    verdicts = [(step, judge_step(step, book, rules)) for step in run.steps]
    passed = {step.users for step, crit in verdicts if _passed(crit)}
    checks = []
    story: list[tuple[str, str, Target | None]] = [
        (check_id, title, resolve(book, check_id, "backend", "any"))
        for check_id, title in LOAD_CHECKS
    ]
    # A step the story's two checks do not judge (--users 30,60) is judged as its own
    # check, load_<n>, by the same criteria.
    # A story check without a row (a user's targets.yaml left it out) still stands for its
    # own number of users: else its step came back as a second check of the same id.
    needs = {
        int(t.value) if t is not None and t.value is not None else _story_users(check_id)
        for check_id, _, t in story
    }
    for step, _ in verdicts:
        if step.users not in needs:
            own = Target(
                check=f"load_{step.users}",
                platform="backend",
                op=">=",
                value=step.users,
                unit="users",
                stat="value",
                source="--users",
            )
            story.append((own.check, f"{step.users} concurrent users supported", own))
    for check_id, title, target in story:
        need = (
            int(target.value)
            if target is not None and target.value is not None
            else _story_users(check_id)
        )
        candidates = sorted((v for v in verdicts if v[0].users >= need), key=lambda v: v[0].users)
        skip = "" if candidates else f"no step with {need} users ran (steps: {run.options.users})"
        if candidates and candidates[0][0].users > need and not _passed(candidates[0][1]):
            # A bigger step that failed says nothing about ``need`` users.
            skip = (
                f"no step with {need} users ran, and the {candidates[0][0].users}-user step did"
                f" not pass (steps: {run.options.users}); add {need} to --users"
            )
        if skip:
            checks.append(
                Check(
                    id=check_id, title=title, category="load", status="skip", unit="users",
                    reason=skip,
                )
            )  # fmt: skip
            continue
        step, criteria = candidates[0]
        failed = [c for c in criteria if c.ok is False]
        below = [u for u in passed if u <= step.users]
        value = float(max(below)) if below else 0.0
        evidence = step_evidence(step, criteria) | {"identities": run.identities}
        if run.notes:
            evidence["notes"] = run.notes
        reason = ""
        if failed:
            reason = f"{step.users} users not supported: " + "; ".join(
                f"{c.name} {_with_unit(c)} (needs {c.limit})"
                if c.value is not None
                else f"{c.name}: {c.detail} (needs {c.limit})"
                for c in failed
            )
        checks.append(
            judge(
                check=check_id,
                title=title,
                category="load",
                target=target,
                value=value,
                unit="users",
                stat="value",
                evidence=evidence,
                reason=reason,
            )
        )
    return checks, _series(run)


def _with_unit(criterion: Criterion) -> str:
    """A criterion's value with the unit of its limit ("65.0 %" beside "< 1 %"; "12 ms"
    beside "< 50 ms"), bare when the limit has none ("3" beside "== 0")."""
    parts = criterion.limit.split()
    unit = parts[-1] if len(parts) >= 3 and not parts[-1][0].isdigit() else ""
    return f"{criterion.value:g} {unit}".strip() if unit else f"{criterion.value:g}"


def _series(run: LoadRun) -> list[Series]:
    series = []
    for step in run.steps:
        prefix = f"load_{step.users}"
        series.append(
            Series(
                name=f"{prefix}.throughput",
                unit="ops/s",
                t=step.timeline_t,
                v=step.timeline_throughput,
            )
        )
        # A second in which nothing completed has no p95 (a stalled server): no point, not
        # a 0 ms one that plots as the best latency of the run.
        measured = [
            (t, v) for t, v in zip(step.timeline_t, step.timeline_p95_ms, strict=True) if v > 0
        ]
        series.append(
            Series(
                name=f"{prefix}.p95",
                unit="ms",
                t=[t for t, _ in measured],
                v=[v for _, v in measured],
            )
        )
        if step.cpu.t:
            t = [round(step.started_s + x, 3) for x in step.cpu.t]
            series.append(Series(name=f"{prefix}.db_cpu", unit="%", t=t, v=step.cpu.pct))
    return series


def to_results(
    run: LoadRun,
    book: TargetBook,
    *,
    backend_kind: BackendKind = "postgres",
    rules: SupportRules | None = None,
) -> Results:
    """A whole ``results.json`` (kind "backend") holding the load checks and series.

    ``run.backend`` is ``backend_kind`` with the run's target as a URL without secrets
    (null when an import's files name no target)."""
    from devicelab.version import full_version

    checks, series = load_checks(run, book, rules)
    return Results(
        run=RunInfo(
            id=f"load-{run.started_at:%Y%m%dT%H%M%SZ}",
            kind="backend",
            started_at=run.started_at,
            finished_at=run.finished_at,
            devicelab_version=full_version(),
            backend=backend_info(backend_kind, run.target),
        ),
        checks=checks,
        series=series,
    )
