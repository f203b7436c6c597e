"""``devicelab backend check``: the story's database criteria as one run of Results.

:func:`run_check` connects (a DSN, or the managed cluster when there is none), makes sure
there is data (seeding the managed cluster, or a given DSN only with ``allow_writes``),
then runs the query suite in passes so each statistic is judged over a fair window:

0. the bloat estimate, of the database as found (mark_as_read's rolled-back runs leave
   dead tuples of their own: on a conversation nobody has read, one per message);
1. warm-up runs of every query (caches filled, plans cached);
2. statistics snapshot; timed runs of every query (a marginal miss timed once more and
   judged on the second series); snapshot again: the buffer hit ratio,
   the index share of scans and the critical-index scans come from this difference;
3. plans: EXPLAIN (ANALYZE, BUFFERS) as the app role, the statements inside functions,
   then as the owner (evidence only);
4. index suggestions for flagged sequential scans, proven with HypoPG;
5. the health checks (unused indexes, sizes, slow statements, long-running).

Everything runs under a statement_timeout; read-only work runs in READ ONLY transactions,
writes (send_message, mark_as_read, HypoPG) in transactions that are rolled back.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from backend_checks import health, server_health
from backend_checks.api_checks import API_CHECKS, ApiOptions, api_preflight, run_api_checks
from backend_checks.backend_info import BackendKind, backend_info, connected_url
from backend_checks.check_load import load_checks
from backend_checks.db import DEFAULT_TIMEOUT_MS, connect, redact, translate
from backend_checks.plans import DEFAULT_MIN_TABLE_PAGES, DEFAULT_MIN_TABLE_ROWS
from backend_checks.query_checks import (
    mark_planner_choices,
    query_check,
    seq_scans_check,
    served_by_other_indexes,
    time_confirmed,
)
from backend_checks.seed import ensure_data
from backend_checks.suggest import suggest
from backend_checks.suite import (
    QueryRun,
    explain_as_owner,
    explain_query,
    load_suite,
    resolve_params,
    round_trip_ms,
    table_rows,
    warm,
)
from devicelab.errors import BadInput
from devicelab.models import BackendInfo, Check, Results, RunInfo
from devicelab.version import full_version

if TYPE_CHECKING:
    import psycopg

__all__ = ["CheckOptions", "check_ids", "run_check"]

DEFAULT_SEED_MESSAGES = 100_000


class CheckOptions(BaseModel):
    """Knobs of a backend check run (the CLI exposes the common ones)."""

    allow_writes: bool = False
    runs: int | None = Field(None, ge=1, description="timed runs per query (default: the file's)")
    min_table_rows: int = Field(DEFAULT_MIN_TABLE_ROWS, ge=1)
    min_table_pages: int = Field(DEFAULT_MIN_TABLE_PAGES, ge=0)
    min_stats_days: float = 7.0
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    seed_messages: int = DEFAULT_SEED_MESSAGES
    only: list[str] | None = Field(
        None,
        description="check ids to run (None or []: all). The SQL suite runs the query "
        "files named (all of them when only server checks are: they are judged on the "
        "queries' windows) and its server checks always come with it; the realtime, "
        "storage and load checks only when named",
    )
    api: ApiOptions = Field(default_factory=ApiOptions, description="realtime and storage")
    load_s: float | None = Field(
        None, gt=0, description="also run the 100- and 1000-user load steps this long each"
    )


def run_check(dsn: str | None = None, options: CheckOptions | None = None) -> Results:
    """Run the whole backend suite against ``dsn`` (None: the managed cluster).

    With a Supabase project in ``options.api`` its preflight runs first; without a DSN the
    SQL checks are then skipped (the managed cluster is not the project's database).

    Returns Results (kind "backend"). Raises BackendUnavailable (unreachable server or
    API, a refused sign-in, the database gone mid-run), UnsafeActionRefused (an empty given
    database without allow_writes, a load the stated plan forbids), BadInput (a database
    without the reference schema: :func:`backend_checks.db.translate`), ProbeFailed
    (another database error), ToolMissing (no PostgreSQL for the managed default).
    """
    options = options or CheckOptions()
    if options.only == []:  # nothing named: everything, as before ids were checked
        options = options.model_copy(update={"only": None})
    started = datetime.now(UTC)
    _targets_first(options.only, load=options.load_s is not None)
    project = options.api.project
    wants_sql = _wants_sql(options.only)
    wants_api = options.only is None or any(cid in options.only for cid, _, _ in API_CHECKS)
    if wants_api:
        # A refused plan, a wrong URL or password is known in seconds, not after the suite.
        api_preflight(options.api, embedded=dsn is None)
    if dsn is None and project is not None:
        # The project's database is not the managed cluster: without its DSN the SQL
        # checks have nothing truthful to run on.
        checks = _sql_skipped(options)
        checks += run_api_checks(None, options.api) if wants_api else []
        return _results(started, _backend("supabase", project.url), checks)
    managed = dsn is None
    if dsn is None:
        from backend_checks.managed import ManagedPostgres

        dsn = ManagedPostgres().ensure()
    import psycopg

    conn = connect(dsn, timeout_ms=options.timeout_ms)
    # What libpq resolved (PGHOST, PGUSER... filling what the DSN leaves out).
    where = connected_url(conn.info) or dsn
    try:
        ensure_data(conn, managed=managed, allow_writes=options.allow_writes,
                    seed_messages=options.seed_messages)  # fmt: skip
        checks = _run_suite(conn, options, managed=managed) if wants_sql else []
    except psycopg.Error as exc:
        # The suite records a failing query as its check's error; what escapes is the
        # database itself not fitting (a table missing) or going away: one line, not a trace.
        raise translate(exc, dsn, "the backend check") from exc
    finally:
        conn.close()
    if wants_api:
        checks += run_api_checks(dsn if managed else None, options.api, sql_dsn=dsn)
    checks += load_checks(dsn, options, managed=managed)
    # The SQL suite talked to a plain database (the managed cluster is one too: the
    # reference server its API checks ran on says so in their evidence). With a project,
    # --dsn is that project's database and the API checks talked to the project.
    if project is not None:
        return _results(started, _backend("supabase", project.url), checks)
    return _results(started, _backend("postgres", where), checks)


#: The checks judged by profiles/targets.yaml's backend rows alone (the query checks fall
#: back to their query file's target), and the unit each measures in.
_BOOKED = {
    "buffer_hit_ratio": "%", "index_usage": "problems", "seq_scans": "scans",
    "unused_indexes": "indexes", "table_sizes": "%", "subscription_setup": "ms",
    "realtime_broadcast": "ms", "storage_upload_5mb": "ms", "storage_download_5mb": "ms",
    "signed_url": "ms",
}  # fmt: skip


def _targets_first(only: list[str] | None, *, load: bool) -> None:
    """Read every backend row the run will judge by, before any work: a user's
    targets.yaml that lacks one is one exit-2 line in a second, not after the data load,
    the suite and the API checks (with no results written). Raises ConfigError."""
    from devicelab.config import find_file, load_targets
    from devicelab.targets import backend_target, check_unit, resolve

    path = find_file("profiles/targets.yaml")
    book = load_targets(path)  # once: each check's own read came 13 times, 0.5 s
    booked = _BOOKED | ({"load_100": "users", "load_1000": "users"} if load else {})
    for check_id, unit in booked.items():
        if only is None or check_id in only:
            row = backend_target(check_id, book, source=str(path))
            check_unit(check_id, row.unit or unit, unit, path=str(path))
    for spec in load_suite():  # a query's row may be left out (the file's own target holds)
        found = resolve(book, spec.id, "backend", "any")
        if (only is None or spec.id in only) and found is not None and found.value is not None:
            check_unit(spec.id, found.unit, "ms", path=str(path))  # the suite times in ms


def _backend(kind: BackendKind, where: str) -> BackendInfo:
    """``run.backend``: ``where`` (an API URL or a DSN we connected with) as a URL without
    secrets. Raises nothing: a DSN libpq parsed to connect always gives one."""
    found = backend_info(kind, where)
    return found if found is not None else BackendInfo(kind=kind, url=redact(where, where))


def _results(started: datetime, backend: BackendInfo, checks: list[Check]) -> Results:
    return Results(
        run=RunInfo(
            id=uuid.uuid4().hex[:12],
            kind="backend",
            started_at=started,
            finished_at=datetime.now(UTC),
            devicelab_version=full_version(),
            backend=backend,
        ),
        checks=checks,
    )


#: The checks of the SQL suite other than the query files': (id, title, category).
_SERVER_CHECKS = (
    ("seq_scans", "Sequential scans that hurt in the suite's plans", "index"),
    ("index_usage", "Index usage (critical indexes scanned, index share per table)", "index"),
    ("unused_indexes", "Unused indexes", "index"),
    ("buffer_hit_ratio", "Buffer cache hit ratio (tables and indexes)", "health"),
    ("table_sizes", "Table and index sizes", "health"),
    ("bloat", "Table bloat (dead tuples)", "health"),
    ("slow_queries", "Slow statements (pg_stat_statements, all roles)", "health"),
    ("long_running", "Long-running statements", "health"),
)


def check_ids() -> list[str]:
    """Every check id ``backend check`` and ``backend load`` report: the query files', the
    server checks', the API checks' and the load's (what targets.yaml's rows may name).
    Raises ConfigError for a broken query file."""
    from backend_checks.load.verdict import LOAD_CHECKS

    ids = [spec.id for spec in load_suite()] + [cid for cid, _, _ in _SERVER_CHECKS]
    ids += [cid for cid, _, _ in API_CHECKS] + [cid for cid, _ in LOAD_CHECKS]
    return list(dict.fromkeys(ids))


def _wants_sql(only: list[str] | None) -> bool:
    """Whether ``only`` (None: everything) asks for a check of the SQL suite. Raises
    BadInput naming the ids no check of ``backend check`` has."""
    if only is None:
        return True
    from backend_checks.load.verdict import LOAD_CHECKS

    sql = {spec.id for spec in load_suite()} | {cid for cid, _, _ in _SERVER_CHECKS}
    known = sql | {cid for cid, _, _ in API_CHECKS} | {cid for cid, _ in LOAD_CHECKS}
    unknown = [cid for cid in only if cid not in known]
    if unknown:
        raise BadInput(
            f"unknown check id(s): {', '.join(unknown)}", hint=f"known: {', '.join(sorted(known))}"
        )
    return any(cid in sql for cid in only)


def _sql_skipped(options: CheckOptions) -> list[Check]:
    """The SQL suite's and the load's checks, skipped: a Supabase project without --dsn."""
    from backend_checks.load.verdict import LOAD_CHECKS

    reason = ("needs the project's database: give --dsn with its connection string "
              "(Supabase: Project Settings > Database)")  # fmt: skip
    found = [(spec.id, spec.title, spec.category) for spec in load_suite()]
    found += _SERVER_CHECKS
    found += [(cid, title, "load") for cid, title in LOAD_CHECKS]
    return [Check(id=cid, title=title, category=category, status="skip", reason=reason)
            for cid, title, category in found
            if options.only is None or cid in options.only]  # fmt: skip


def _run_suite(
    conn: psycopg.Connection[Any], options: CheckOptions, *, managed: bool
) -> list[Check]:
    """Every check, in the passes of the module docstring."""
    import psycopg

    from devicelab.targets import judge

    queries = {spec.id for spec in load_suite()}
    chosen = [cid for cid in options.only or [] if cid in queries]
    # Only server checks asked for: they are judged on the queries' windows, so all run.
    specs = load_suite(ids=chosen or None)
    if options.runs:
        specs = [spec.model_copy(update={"runs": options.runs}) for spec in specs]
    bloat = server_health.bloat(conn, min_table_rows=10 * options.min_table_rows)
    dead_found = {t["table"]: t["dead"] for t in bloat.evidence["tables"]}
    rows = table_rows(conn)
    conn.rollback()
    cache: dict[str, dict[str, str]] = {}
    params = {}
    for spec in specs:
        if spec.params not in cache:
            cache[spec.params] = resolve_params(conn, spec.params)
        params[spec.id] = cache[spec.params]
    rtt = round_trip_ms(conn)
    conn.rollback()
    # Each query is warmed right before its own timed runs, and the statistics window is
    # the sum of the per-query windows: a query is judged on its working set, not on
    # whether the union of all six fits in shared_buffers (or survives other tenants).
    runs: list[QueryRun] = []
    windows: list[health.Window] = []
    for i, spec in enumerate(specs):
        try:
            slowest = warm(conn, spec, params[spec.id])
        except psycopg.Error:
            slowest = float("inf")  # the timed runs record the error
        if slowest > 1000:  # a second per run: a few runs tell as much, and cost less
            specs[i] = spec.model_copy(update={"runs": min(spec.runs, 3)})
        window = health.Window.open(conn)
        # A marginal miss is timed once more inside the same window (see time_confirmed).
        runs.append(time_confirmed(conn, specs[i], params[spec.id], rtt_ms=rtt, judge=judge))
        windows.append(window.close(conn))
    before_t, after_t, before_i, after_i = health.Window.total(windows)
    for spec, run in zip(specs, runs, strict=True):
        explain_query(conn, spec, run, sizes=rows, min_table_rows=options.min_table_rows)
    for spec, run in zip(specs, runs, strict=True):
        explain_as_owner(conn, spec, run, sizes=rows, min_table_rows=options.min_table_rows)
    usage = health.index_usage(
        before_t,
        after_t,
        before_i,
        after_i,
        specs=specs,
        min_table_rows=options.min_table_rows,
        min_table_pages=options.min_table_pages,
        planner_choice=mark_planner_choices(conn, specs, runs, list(after_i.values())),
        served=served_by_other_indexes(runs, list(after_i.values())),
        failed={run.id: run.error for run in runs if run.error and not run.timed_out},
    )
    missing = [
        (c["query"], c["table"], c["columns"], c["method"], c["unique"])
        for c in usage.evidence["critical"]
        if not c["indexes"]
    ]
    suggestions = suggest(
        conn,
        specs,
        runs,
        build_allowed=managed or options.allow_writes,
        missing=missing,
        existing=after_i.values(),
    )
    usage.evidence["suggestions"] = [s.model_dump() for s in suggestions]
    if missing and suggestions:
        usage.reason += "; suggested: " + "; ".join(
            f"{s.ddl} [{'proven' if s.proven else 'unproven'}]" for s in suggestions
        )

    checks: list[Check] = []
    for spec, run in zip(specs, runs, strict=True):
        checks.append(query_check(spec, run, judge))
    checks.append(
        seq_scans_check(
            runs,
            suggestions,
            before_t,
            after_t,
            min_table_rows=options.min_table_rows,
            min_table_pages=options.min_table_pages,
        )
    )
    checks.append(usage)
    checks.append(
        health.unused_indexes(
            conn,
            min_stats_days=options.min_stats_days,
            window_start=health.stats_window_start(conn),
        )
    )
    checks.append(health.buffer_hit_ratio(before_t, after_t))
    checks.append(server_health.table_sizes(conn))
    checks.append(bloat)
    checks.append(server_health.slow_queries(conn))
    checks.append(server_health.long_running(conn))
    bloat.evidence["vacuumed_after"] = _vacuum_what_grew(conn, dead_found)
    return checks


def _vacuum_what_grew(conn: psycopg.Connection[Any], dead_found: dict[str, int]) -> list[str]:
    """VACUUM the tables with more dead tuples than ``dead_found`` (table -> dead tuples
    before the suite); returns those done. The rolled-back runs of send_message and
    mark_as_read leave dead tuples (one per receipt of a conversation nobody has read):
    the database is left as we found it, and the next check's bloat is not our own."""
    now = health.snapshot(conn).items()
    grown = [name for name, t in now if t.dead > dead_found.get(name, t.dead)]
    conn.rollback()  # ends the read of the snapshot; nothing of ours is pending
    return server_health.vacuum(conn, grown)
