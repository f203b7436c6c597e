"""The query suite: the story's queries as data (``queries/*.yaml``), run and explained.

Each query runs as the app would run it: as the ``authenticated`` role with
``request.jwt.claims`` naming a user (``SET LOCAL ROLE`` + ``set_config(..., true)``), so
RLS is in its timings and plans. Its parameters come from the data (``params:`` SQL,
run once, read-only). Then:

- ``warmup`` runs, then ``runs`` timed runs, each in its own transaction (READ ONLY for
  reads; writes are rolled back). A sample is the client's wall time minus the median
  round trip of ``SELECT 1`` on the same connection, so a remote server is judged on the
  query, not the network (both are kept in the evidence).
- one ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` as the app role, and one as the
  connecting role (no RLS, the story's way) for comparison.
- for functions (``function:``), the plans of the statements inside: auto_explain is
  loaded into the session (``LOAD 'auto_explain'``, skipped when the server preloads it;
  ``log_nested_statements``, ``log_analyze``, ``log_format = json``, ``log_level =
  notice``) and the plans arrive as NOTICEs. ``LOAD`` of a library outside
  ``$libdir/plugins`` needs a superuser, and so do auto_explain's settings unless granted
  (``GRANT SET ON PARAMETER``, PostgreSQL 15); without them the statements inside are
  taken from pg_stat_statements (``toplevel = false``: timings and buffers, no plans), and
  ``nested_source`` says what was used, or why nothing could be and what would fix it.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend_checks.nested_stats import statements_inside
from backend_checks.plans import (
    DEFAULT_MIN_TABLE_ROWS,
    NestedPlan,
    PlanSummary,
    analyze_plan,
    nested_plans,
)
from devicelab.config import load_yaml_model
from devicelab.errors import BadInput, first_line

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "AUTO_EXPLAIN_SETTINGS",
    "CriticalIndex",
    "FirstSeries",
    "QueryRun",
    "QuerySpec",
    "QueryTarget",
    "TableSizes",
    "app_transaction",
    "explain_as_owner",
    "explain_query",
    "load_suite",
    "plans_inside",
    "resolve_params",
    "round_trip_ms",
    "table_rows",
    "time_query",
    "timeout_ms",
    "warm",
]

APP_ROLE = "authenticated"


class QueryTarget(BaseModel):
    """The story's bound for a query and where it says so."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["<", "<=", ">", ">="] = "<"
    value: float
    unit: str = "ms"
    stat: Literal["p50", "p95", "max", "mean"] = "p95"
    source: str


class CriticalIndex(BaseModel):
    """An index a query needs, by table and leading columns (any name will do)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    columns: list[str] = Field(description="leading columns, e.g. created_at DESC")
    method: Literal["btree", "gin"] = "btree"
    unique: bool = Field(False, description="unique (ON CONFLICT on these columns needs it)")


class QuerySpec(BaseModel):
    """One file of ``backend_checks/queries/``: a check id, its SQL and its target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    category: str = "query"
    source: str = Field(description="the story's line the query comes from")
    params: str = Field(description="SQL returning one row: the query's parameters")
    sql: str = Field(description="the query, with %(name)s placeholders")
    writes: bool = False
    function: str | None = Field(None, description="function whose statements to explain")
    indexes: list[CriticalIndex] = Field(
        default_factory=list, description="the indexes this query needs (index_usage)"
    )
    runs: int = Field(20, ge=1)
    warmup: int = Field(3, ge=0)
    target: QueryTarget


class FirstSeries(BaseModel):
    """The first series of timed runs of a query re-timed after a marginal miss: kept as
    evidence, not judged (the second series is)."""

    p50: float
    p95: float
    samples: list[float]
    missed: str = Field(description="its judged statistic, e.g. 'p95 52.3 ms'")


class QueryRun(BaseModel):
    """What running one QuerySpec measured."""

    id: str
    params: dict[str, str]
    samples_ms: list[float] = Field(default_factory=list)
    wall_ms: list[float] = Field(default_factory=list)
    round_trip_ms: float = 0.0
    rows: int = 0
    app_plan: PlanSummary | None = None
    app_plan_json: Any = None
    owner_plan: PlanSummary | None = None
    nested: list[NestedPlan] = Field(default_factory=list)
    nested_source: str = ""
    nested_stats: list[dict[str, Any]] = Field(default_factory=list)
    nested_unread: str = Field(
        "", description="why the plans inside the function could not be read ('' if they were)"
    )
    error: str | None = None
    error_state: str | None = Field(None, description="the SQLSTATE of ``error``")
    timed_out: bool = False
    plan_estimated_only: bool = False
    owner_error: str | None = None
    first_series: FirstSeries | None = Field(
        None, description="the series that missed marginally, when the samples are a re-timing"
    )

    def seq_scans(self) -> list[Any]:
        """The sequential scans of the app plan and of the nested statements."""
        scans = list(self.app_plan.seq_scans) if self.app_plan else []
        for nested in self.nested:
            scans.extend(nested.summary.seq_scans)
        return scans

    def flagged(self) -> list[Any]:
        """The flagged sequential scans of the app plan and of the nested statements."""
        return [scan for scan in self.seq_scans() if scan.flagged]


def load_suite(directory: Path | None = None, ids: list[str] | None = None) -> list[QuerySpec]:
    """The query specs of ``directory`` (default: the ones shipped), sorted by file name.

    Raises ConfigError (file:line) for a bad file, BadInput for an unknown id.
    """
    if directory is None:
        directory = Path(str(resources.files("backend_checks").joinpath("queries")))
    specs = [load_yaml_model(path, QuerySpec) for path in sorted(directory.glob("*.yaml"))]
    if ids:
        known = {spec.id for spec in specs}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise BadInput(
                f"unknown query id(s): {', '.join(unknown)}", hint=f"known: {sorted(known)}"
            )
        specs = [spec for spec in specs if spec.id in ids]
    return specs


class TableSizes(BaseModel):
    """Row estimates and page counts of the user tables, keyed by ``name`` and
    ``schema.name``: what decides whether a sequential scan is flagged."""

    rows: dict[str, float] = Field(default_factory=dict)
    pages: dict[str, float] = Field(default_factory=dict)


def table_rows(conn: psycopg.Connection[Any]) -> TableSizes:
    """The sizes of the user tables (pg_class.reltuples and relpages)."""
    found = TableSizes()
    rows = conn.execute(
        """SELECT n.nspname, c.relname, greatest(c.reltuples, 0)::float8, c.relpages::float8
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p', 'm')
             AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"""
    ).fetchall()
    for schema, name, estimate, pages in rows:
        found.rows[f"{schema}.{name}"] = float(estimate)
        found.pages[f"{schema}.{name}"] = float(pages)
        found.rows[name] = max(found.rows.get(name, 0.0), float(estimate))
        found.pages[name] = max(found.pages.get(name, 0.0), float(pages))
    return found


def resolve_params(conn: psycopg.Connection[Any], sql: str) -> dict[str, str]:
    """Run a ``params:`` query (read-only) and return its one row as text values.

    Raises BadInput when it returns no row (an empty database).
    """
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        cur = conn.execute(sql)
        row = cur.fetchone()
        names = [col.name for col in cur.description or []]
    if row is None:
        raise BadInput(
            "the database holds no messages to choose query parameters from",
            hint="generate data first: devicelab backend datagen --messages 100000 --allow-writes",
        )
    return {name: str(value) for name, value in zip(names, row, strict=True)}


def app_transaction(conn: psycopg.Connection[Any], user_id: str | None, *, read_only: bool) -> None:
    """Inside an open transaction: become the app (role ``authenticated`` with the JWT
    claims of ``user_id``), as PostgREST does for a signed-in request."""
    if read_only:
        conn.execute("SET TRANSACTION READ ONLY")
    claims = json.dumps({"sub": user_id, "role": APP_ROLE, "aud": APP_ROLE})
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))
    conn.execute(f"SET LOCAL ROLE {APP_ROLE}")


def round_trip_ms(conn: psycopg.Connection[Any], n: int = 20) -> float:
    """The median wall time of ``SELECT 1`` on ``conn``, in ms."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.execute("SELECT 1").fetchall()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def timeout_ms(spec: QuerySpec) -> int:
    """The statement_timeout of ``spec``'s runs: 50x its target, at least 5 s. A query
    that slow has failed anyway; waiting longer only stalls the run."""
    bound = spec.target.value * (1000 if spec.target.unit == "s" else 1)
    return int(max(5000.0, 50 * bound))


def warm(conn: psycopg.Connection[Any], spec: QuerySpec, params: dict[str, str]) -> float:
    """Run ``spec`` up to ``warmup`` times (results thrown away); stops after a run slower
    than a second (the timed runs will tell). Returns the slowest wall time in ms.
    Raises psycopg errors."""
    slowest = 0.0
    for _ in range(spec.warmup):
        wall, _rows = _timed_once(conn, spec, params)
        slowest = max(slowest, wall)
        if wall > 1000:
            break
    return slowest


def _timed_once(
    conn: psycopg.Connection[Any], spec: QuerySpec, params: dict[str, str]
) -> tuple[float, int]:
    sql: Any = spec.sql
    with conn.transaction(force_rollback=True):
        app_transaction(conn, params.get("user_id"), read_only=not spec.writes)
        conn.execute(f"SET LOCAL statement_timeout = {timeout_ms(spec)}")
        start = time.perf_counter()
        cur = conn.execute(sql, params)
        fetched = cur.fetchall() if cur.description else []
        wall = (time.perf_counter() - start) * 1000
    return wall, len(fetched)


def time_query(
    conn: psycopg.Connection[Any], spec: QuerySpec, params: dict[str, str], *, rtt_ms: float
) -> QueryRun:
    """The ``runs`` timed runs of ``spec``: a QueryRun with its samples, or its error."""
    import psycopg

    run = QueryRun(id=spec.id, params=params, round_trip_ms=round(rtt_ms, 4))
    try:
        for _ in range(spec.runs):
            wall, rows = _timed_once(conn, spec, params)
            run.wall_ms.append(round(wall, 4))
            run.samples_ms.append(round(max(wall - rtt_ms, 0.0), 4))
            run.rows = rows
    except psycopg.errors.QueryCanceled:
        run.timed_out = True
        run.error = f"canceled by statement_timeout after {timeout_ms(spec)} ms"
    except psycopg.Error as exc:
        run.error = first_line(exc)
        run.error_state = exc.sqlstate
    return run


def explain_query(
    conn: psycopg.Connection[Any],
    spec: QuerySpec,
    run: QueryRun,
    *,
    sizes: TableSizes,
    min_table_rows: int = DEFAULT_MIN_TABLE_ROWS,
) -> None:
    """Add to ``run`` the app-role plan of ``spec`` and, for functions, the plans of the
    statements inside. A query error is recorded in ``run.error``."""
    import psycopg

    explain: Any = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + spec.sql
    try:
        try:
            with conn.transaction(force_rollback=True):
                app_transaction(conn, run.params.get("user_id"), read_only=not spec.writes)
                conn.execute(f"SET LOCAL statement_timeout = {timeout_ms(spec)}")
                plan = conn.execute(explain, run.params).fetchone()
        except psycopg.errors.QueryCanceled:
            # Too slow to run to the end: the planner's plan (estimates only) still shows
            # where the time goes.
            estimate: Any = "EXPLAIN (FORMAT JSON) " + spec.sql
            with conn.transaction(force_rollback=True):
                app_transaction(conn, run.params.get("user_id"), read_only=not spec.writes)
                plan = conn.execute(estimate, run.params).fetchone()
            run.plan_estimated_only = True
        run.app_plan_json = plan[0] if plan else None
        run.app_plan = analyze_plan(
            run.app_plan_json, sizes.rows, min_table_rows=min_table_rows, table_pages=sizes.pages
        )
        if spec.function:
            _nested(conn, spec, run.params, run, sizes, min_table_rows)
    except psycopg.Error as exc:
        if run.error is None:
            run.error, run.error_state = first_line(exc), exc.sqlstate


def explain_as_owner(
    conn: psycopg.Connection[Any],
    spec: QuerySpec,
    run: QueryRun,
    *,
    sizes: TableSizes,
    min_table_rows: int = DEFAULT_MIN_TABLE_ROWS,
) -> None:
    """Add to ``run`` the plan of ``spec`` as the connecting role (no RLS: the story's
    way), with the same JWT claims; for comparison only."""
    import psycopg

    explain: Any = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + spec.sql
    try:
        with conn.transaction(force_rollback=True):
            claims = json.dumps({"sub": run.params.get("user_id"), "role": APP_ROLE})
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))
            conn.execute(f"SET LOCAL statement_timeout = {timeout_ms(spec)}")
            owner = conn.execute(explain, run.params).fetchone()
        if owner:
            run.owner_plan = analyze_plan(
                owner[0],
                sizes.rows,
                min_table_rows=min_table_rows,
                where="query as owner",
                table_pages=sizes.pages,
            )
    except psycopg.Error as exc:
        run.owner_error = first_line(exc)


#: auto_explain's settings that :func:`plans_inside` sets (superuser-only unless granted).
AUTO_EXPLAIN_SETTINGS = (
    "log_min_duration",
    "log_analyze",
    "log_buffers",
    "log_nested_statements",
    "log_format",
    "log_level",
)


@contextlib.contextmanager
def plans_inside(conn: psycopg.Connection[Any], *, analyze: bool) -> Iterator[list[str]]:
    """Inside an open transaction, before becoming the app role (loading auto_explain and
    setting it need a superuser, or a server that preloads it and grants its settings):
    log the plan of every statement run in the block, those inside functions included, as
    a NOTICE (JSON; with ``analyze``, actual rows and buffers too). Yields the list the
    NOTICE texts are collected into (read it with :func:`nested_plans`). The settings are
    LOCAL: they end with the transaction. Raises psycopg errors when auto_explain cannot
    be loaded or set."""
    notices: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary and "plan:" in diag.message_primary:
            notices.append(diag.message_primary)

    with conn.transaction():
        # LOAD is refused to a non-superuser even when the library is loaded already
        # (session_ or shared_preload_libraries): its settings exist then, so skip it.
        loaded = conn.execute("SELECT current_setting('auto_explain.log_level', true)")
        if not (row := loaded.fetchone()) or row[0] is None:
            conn.execute("LOAD 'auto_explain'")
        values = {
            "log_min_duration": "0",
            "log_analyze": "on" if analyze else "off",
            "log_buffers": "on" if analyze else "off",
            "log_nested_statements": "on",
            "log_format": "json",
            "log_level": "notice",
        }
        for setting, value in values.items():
            conn.execute(f"SET LOCAL auto_explain.{setting} = {value}")
        conn.execute("SET LOCAL client_min_messages = notice")
    conn.add_notice_handler(keep)
    try:
        yield notices
    finally:
        conn.remove_notice_handler(keep)


def _auto_explain_fix(role: str) -> str:
    """What lets ``role`` (quoted) read plans inside functions with auto_explain."""
    names = ", ".join(f"auto_explain.{s}" for s in AUTO_EXPLAIN_SETTINGS)
    return (
        "connect as a superuser, or preload auto_explain (session_preload_libraries) and "
        f"GRANT SET ON PARAMETER {names} TO {role}"
    )


def _nested(
    conn: psycopg.Connection[Any],
    spec: QuerySpec,
    params: dict[str, str],
    run: QueryRun,
    sizes: TableSizes,
    min_table_rows: int,
) -> None:
    """Collect the plans of the statements inside ``spec.function`` (auto_explain), or
    their pg_stat_statements rows when auto_explain cannot be switched on. Sets
    ``run.nested_source`` to what was used (or why nothing could be, with the fix) and
    ``run.nested_unread`` when no plan could be read. Raises psycopg errors of the call."""
    import psycopg

    sql: Any = spec.sql
    notices: list[str] = []
    unavailable = ""
    with conn.transaction(force_rollback=True), contextlib.ExitStack() as stack:
        # Named in the grants that would fix what this role may not do, as SQL spells it.
        row = conn.execute("SELECT quote_ident(session_user)").fetchone()
        who = str(row[0]) if row else "current_user"
        try:
            notices = stack.enter_context(plans_inside(conn, analyze=True))
        except psycopg.Error as exc:
            unavailable = f"auto_explain unavailable: {first_line(exc)}"
            run.nested_unread = unavailable
        app_transaction(conn, params.get("user_id"), read_only=not spec.writes)
        conn.execute(f"SET LOCAL statement_timeout = {timeout_ms(spec)}")
        conn.execute(sql, params).fetchall()
    if notices:
        run.nested = [
            plan
            for plan in nested_plans(
                notices, sizes.rows, min_table_rows=min_table_rows, table_pages=sizes.pages
            )
            if _head(plan.query) != _head(spec.sql)
            and not plan.query.lower().startswith(("select set_config", "explain"))
        ]
    if run.nested:
        run.nested_source = "auto_explain (log_nested_statements)"
        return
    run.nested_stats, why_none = statements_inside(conn, spec.function or "", who)
    if not unavailable:
        run.nested_source = "auto_explain logged no nested statement (inlined function)"
        return
    # Say what stood in for the plans, or why nothing could and what would fix each way:
    # a bare "pg_stat_statements" with nothing behind it read as if it had been consulted.
    fix = _auto_explain_fix(who)
    if run.nested_stats:
        run.nested_source = (
            f"pg_stat_statements (timings and buffers, no plans; {unavailable}; for plans: {fix})"
        )
    else:
        run.nested_source = f"none: {unavailable} ({fix}); {why_none}"


def _head(sql: str) -> str:
    """The text of a statement up to its first parameter, whitespace collapsed: the
    top-level call as written (``%(x)s``) and as logged (``$1``) compare equal."""
    text = " ".join(sql.split())
    for mark in ("%(", "$"):
        text = text.split(mark)[0]
    return text.strip().lower()
