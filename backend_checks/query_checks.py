"""The checks of the query suite's results: one per query (its time against the
story's target, with its plans as evidence) and ``seq_scans`` (sequential scans of
big tables, with proven index suggestions); and what index_usage needs to know of the
plans (an index the planner rightly passed over, a key another index already serves).

A query whose timed runs miss the target by a small margin (at most ``MARGINAL_MISS``
times it) is timed once more and judged on the second series (:func:`time_confirmed`):
one or two CPU-scheduling spikes among 20 runs push a healthy query's p95 over, while a
real regression misses twice. A gross miss (over 2x) is not re-timed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backend_checks import health
from backend_checks.reasons import judged_reason
from backend_checks.suggest import Suggestion, covering_index
from backend_checks.suite import FirstSeries, QueryRun, QuerySpec, time_query, timeout_ms
from devicelab.models import Check, CheckTarget, Target
from devicelab.numbers import fmt_judged
from devicelab.targets import backend_target

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "MARGINAL_MISS",
    "marginal_miss",
    "mark_planner_choices",
    "query_check",
    "seq_scans_check",
    "served_by_other_indexes",
    "time_confirmed",
]

#: A miss by at most this factor of the target is timed once more before it is a fail
#: (healthy unread_count at 300K on a busy CPU: p95 52-65 ms against < 50 ms).
MARGINAL_MISS = 2.0


def _target(spec: QuerySpec) -> Target:
    """The story's target for a query: profiles/targets.yaml's backend row when there is
    one, else the target written in the query file.

    Raises ConfigError (exit 2) when targets.yaml is wrong: a broken file is the user's to
    fix, not a reason to judge by other numbers. (There is always a file: load_targets
    falls back to the copy shipped in the package.)
    """
    from devicelab.config import load_targets
    from devicelab.targets import resolve

    found = resolve(load_targets(), spec.id, "backend", "any")
    if found is not None:
        return found
    t = spec.target
    return Target(
        check=spec.id,
        platform="backend",
        op=t.op,
        value=t.value,
        unit=t.unit,
        stat=t.stat,
        source=t.source,
    )


def _check_target(spec: QuerySpec) -> CheckTarget:
    t = _target(spec)
    return CheckTarget(op=t.op, value=float(t.value or 0), unit=t.unit, source=t.source)


#: SQLSTATE read_only_sql_transaction: "cannot execute INSERT in a read-only transaction".
_READ_ONLY = "25006"


def query_check(spec: QuerySpec, run: QueryRun, judge: Any) -> Check:
    """The Check of one query: its samples judged against the story's target, ``fail`` when
    it ran past its timeout, ``error`` when it failed, ``skip`` for a write the role's
    read-only transactions refused (a read-replica style role: no verdict to give).
    Raises nothing."""
    evidence: dict[str, Any] = {
        "sql": spec.sql.strip(),
        "source": spec.source,
        "params": run.params,
        "role": "authenticated (request.jwt.claims sub = params.user_id)",
        "rows": run.rows,
        "round_trip_ms": run.round_trip_ms,
        "wall_ms": run.wall_ms,
        "sample": "wall time minus the median SELECT 1 round trip",
        "retimed": run.first_series is not None,
    }
    if run.first_series is not None:
        evidence["first_series"] = run.first_series.model_dump()
    if run.app_plan:
        evidence["plan"] = run.app_plan.model_dump()
        evidence["plan_estimated_only"] = run.plan_estimated_only
        evidence["plan_json"] = run.app_plan_json
    if run.owner_plan:
        evidence["plan_as_owner"] = run.owner_plan.model_dump()
    if spec.function:
        evidence["nested_source"] = run.nested_source
        evidence["nested"] = [
            {"query": n.query, "duration_ms": n.duration_ms, "plan": n.summary.model_dump()}
            for n in run.nested
        ]
        if run.nested_stats:
            evidence["nested_stats"] = run.nested_stats
        if run.nested_unread:
            evidence["nested_unread"] = run.nested_unread
    if run.timed_out:
        return Check(
            id=spec.id,
            title=spec.title,
            category=spec.category,
            status="fail",
            value=float(timeout_ms(spec)),
            unit="ms",
            target=_check_target(spec),
            reason=f"{run.error}: far beyond the target",
            evidence=evidence,
        )
    if run.error and spec.writes and run.error_state == _READ_ONLY:
        return Check(
            id=spec.id,
            title=spec.title,
            category=spec.category,
            status="skip",
            unit="ms",
            reason=(
                f"not run: the connecting role's transactions are read-only (SQLSTATE 25006, "
                f"read_only_sql_transaction: {run.error}); {spec.id} writes, in transactions "
                "that are rolled back: connect as a role that may write (not one with "
                "default_transaction_read_only = on, nor a read replica)"
            ),
            evidence=evidence,
        )
    if run.error:
        return Check(
            id=spec.id,
            title=spec.title,
            category=spec.category,
            status="error",
            unit="ms",
            reason=f"query failed: {run.error}",
            evidence=evidence,
        )
    check: Check = judge(
        check=spec.id,
        title=spec.title,
        category=spec.category,
        target=_target(spec),
        samples=run.samples_ms,
        unit="ms",
        column="any",
        evidence=evidence,
    )
    if run.first_series is not None:
        check.reason += f"; re-timed after a marginal miss: first {run.first_series.missed}"
    flagged = run.flagged()
    if flagged and check.status == "pass":
        scans = "sequential scan" if len(flagged) == 1 else "sequential scans"
        check.reason += f"; but {len(flagged)} {scans} flagged (see seq_scans)"
    return check


def marginal_miss(spec: QuerySpec, run: QueryRun, judge: Any) -> Check | None:
    """The failed Check of ``run`` when its judged statistic misses the target by at most
    MARGINAL_MISS times it (worth timing once more), else None: a pass, a gross miss, an
    error or a timeout. Raises ConfigError for a broken targets.yaml (as query_check)."""
    if run.error or run.timed_out or not run.samples_ms:
        return None
    check = query_check(spec, run, judge)
    if check.status != "fail" or check.value is None or check.target is None:
        return None
    value, bound = check.value, check.target.value
    if value <= 0 or bound <= 0:
        return None
    # How many times the target the value is, read the way the bound points.
    factor = value / bound if check.target.op in ("<", "<=") else bound / value
    return check if factor <= MARGINAL_MISS else None


def time_confirmed(
    conn: psycopg.Connection[Any],
    spec: QuerySpec,
    params: dict[str, str],
    *,
    rtt_ms: float,
    judge: Any,
) -> QueryRun:
    """The timed runs of ``spec`` (:func:`~backend_checks.suite.time_query`); after a
    marginal miss (:func:`marginal_miss`) a second series of ``runs``, which is the one
    returned and judged, with the first in ``first_series``. Raises psycopg errors only
    outside the queries (those are recorded in the QueryRun), ConfigError as
    marginal_miss."""
    run = time_query(conn, spec, params, rtt_ms=rtt_ms)
    missed = marginal_miss(spec, run, judge)
    if missed is None or missed.summary is None:
        return run
    again = time_query(conn, spec, params, rtt_ms=rtt_ms)
    shown = fmt_judged(missed.value, missed.unit, missed.target)
    again.first_series = FirstSeries(
        p50=missed.summary.p50,
        p95=missed.summary.p95,
        samples=missed.samples,
        missed=f"{missed.stat} {shown}",
    )
    return again


def _unqualified(table: str) -> str:
    """``messages`` of ``public.messages`` (plans name a table without its schema)."""
    return table.rsplit(".", maxsplit=1)[-1]


def served_by_other_indexes(
    runs: list[QueryRun], indexes: list[health.IndexStats]
) -> dict[tuple[str, str], list[str]]:
    """(query id, schema.table) -> the indexes through which the query's plans (the app
    role's, and the statements inside its function) read the table, for each table they
    read through an index and never sequentially. No plans (an error, a function whose
    statements auto_explain could not show): nothing."""
    table_of = {ix.index.rsplit(".", maxsplit=1)[-1]: ix.table for ix in indexes}
    served: dict[tuple[str, str], list[str]] = {}
    for run in runs:
        plans = [run.app_plan] if run.app_plan else []
        plans += [nested.summary for nested in run.nested]
        read_whole = {_unqualified(scan.table) for plan in plans for scan in plan.seq_scans}
        for plan in plans:
            for name in plan.indexes:
                table = table_of.get(name)
                if table and _unqualified(table) not in read_whole:
                    used = served.setdefault((run.id, table), [])
                    used += [name] if name not in used else []
    return served


#: A scan whose filter keeps at least this share of the rows it reads gains little from an
#: index, which would fetch most of the table anyway.
UNSELECTIVE_SHARE = 0.10


def mark_planner_choices(
    conn: psycopg.Connection[Any],
    specs: list[QuerySpec],
    runs: list[QueryRun],
    indexes: list[health.IndexStats],
) -> set[str]:
    """Unflag the big sequential scans the planner chose knowingly, and return the tables
    (schema.name) whose every big scan in the suite was such a choice, for index_usage.

    A scan is the planner's choice when the index its query needs on that table is there
    (valid, whole) and the scan keeps UNSELECTIVE_SHARE or more of what it reads (a
    conversation holding half of all messages: counting its messages reads half the
    table); or when the index we would suggest for it is there already (the planner had
    it: with every message in one conversation, unread_count joins them all to the
    caller's receipts, half of that table, read whole). A missing index is never excused
    (it is not there).

    Without this a healthy database of few conversations (``datagen --messages 20000
    --conversations 10``, or one conversation) failed seq_scans on unread_count."""
    usable = [ix for ix in indexes if ix.valid and not ix.partial]
    chosen: set[str] = set()
    still: set[str] = set()
    for spec, run in zip(specs, runs, strict=True):
        # Tables where every index the query needs is there (one missing: not excused).
        needed = {_unqualified(n.table): n.table for n in spec.indexes}
        missing = {_unqualified(n.table) for n in spec.indexes if not health.indexes_for(n, usable)}
        served = {bare: table for bare, table in needed.items() if bare not in missing}
        for scan in run.seq_scans():
            if not scan.flagged:
                continue
            table = served.get(_unqualified(scan.table))
            unselective = scan.rows_returned >= UNSELECTIVE_SHARE * scan.rows_examined > 0
            if table and unselective:
                scan.flagged, scan.planner_choice = False, True
                chosen.add(table)
            elif (ix := covering_index(conn, scan, usable)) is not None:
                scan.flagged, scan.planner_choice = False, True
                chosen.add(ix.table)
            else:
                still.add(_unqualified(scan.table))
    return {table for table in chosen if _unqualified(table) not in still}


def seq_scans_check(
    runs: list[QueryRun],
    suggestions: list[Suggestion],
    before: dict[str, health.TableStats],
    after: dict[str, health.TableStats],
    *,
    min_table_rows: int,
    min_table_pages: int,
) -> Check:
    """Returns the ``seq_scans`` check of the suite's ``runs``: it fails when a plan
    scans a table whole where it hurts (a scan the plan analysis flagged on a table of
    at least ``min_table_rows`` rows in ``min_table_pages`` pages, or a smaller one that
    a proven suggestion's index removes), each listed in the evidence with the
    ``suggestions`` and the tables' seq_scan counts between ``before`` and ``after``.
    Raises ConfigError when profiles/targets.yaml has no backend row for seq_scans."""
    # A table below the size threshold is read faster whole, so its scans are not flagged,
    # unless an index the query needs is missing and proven to help: then the scan is the
    # one that index removes (at 1,000 messages a dropped message index was suggested and
    # proven, but its scans passed as small).
    proven = {
        (query, _unqualified(s.table)) for s in suggestions if s.proven for query in s.queries
    }
    flagged = []
    for run in runs:
        for scan in run.seq_scans():
            small = (
                not scan.flagged
                and scan.rows_examined >= min_table_rows
                and (run.id, _unqualified(scan.table)) in proven
            )
            if scan.flagged or small:
                flagged.append(
                    {"query": run.id, **scan.model_dump(), "flagged": True}
                    | ({"below_size_threshold": True} if small else {})
                )
    deltas = {
        name: {
            "seq_scan": t.seq_scan - before[name].seq_scan,
            "seq_tup_read": t.seq_tup_read - before[name].seq_tup_read,
        }
        for name, t in after.items()
        if name in before
    }
    deltas = {k: v for k, v in deltas.items() if v["seq_scan"]}
    why = ""
    if flagged:
        why = ", ".join(sorted({f"{f['query']} ({f['table']})" for f in flagged}))
        if suggestions:
            why += "; suggested: " + "; ".join(
                f"{s.ddl} [{'proven' if s.proven else 'unproven'}]" for s in suggestions
            )
    target = backend_target("seq_scans")
    said = (f"{{value}} where they hurt in the suite's plans (tables >= {min_table_rows:,} "
            f"rows in >= {min_table_pages:,} pages, or a proven missing index)")  # fmt: skip
    reason = judged_reason(said, len(flagged), "scans", target, why)
    # A function's own plan is one Result node: without the plans of its statements their
    # scans were never looked at, and a pass must not read as if they had been.
    unread = {run.id: run.nested_unread for run in runs if run.nested_unread}
    if unread:
        reason += (
            f"; plans inside the functions of {', '.join(unread)} not read, their scans "
            f"not inspected ({next(iter(unread.values()))}; see their nested_source)"
        )
    return Check(
        id="seq_scans",
        title="Sequential scans that hurt in the suite's plans",
        category="index",
        status="fail" if flagged else "pass",
        value=len(flagged),
        unit="scans",
        target=target,
        reason=reason,
        evidence={
            "flagged": flagged,
            "function_plans_unread": unread,
            "min_table_rows": min_table_rows,
            "min_table_pages": min_table_pages,
            "table_seq_scans_in_window": deltas,
            "suggestions": [s.model_dump() for s in suggestions],
        },
    )
