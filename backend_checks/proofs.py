"""Proofs of index suggestions: planner cost before and after the index.

A B-tree candidate is proven with HypoPG: inside a transaction that is rolled back
(``CREATE EXTENSION IF NOT EXISTS hypopg`` included, so nothing stays behind), the query
is explained as the app role before and after ``hypopg_create_index``; it is proven when
the planner picks the hypothetical index and the plan's total cost drops by at least
``PROOF_MIN_GAIN`` (10 %; the scan an index removes is often one part of a bigger plan:
unread_count's receipts scan is a quarter of its cost, and the index halves that). HypoPG
cannot model GIN for ``@>`` or full text: when writes are allowed (the managed cluster, or
``--allow-writes``) a GIN candidate is proven by building the real index inside a
transaction that is rolled back (the build locks the table against writes while it runs);
otherwise, or when the build cannot run (a role that may not load auto_explain), it is
proven on a scratch copy (:func:`prove_on_copy`: the column copied into a temporary table,
the table itself only read), or reported as unproven when even that cannot run. A server
without HypoPG gets the same two routes for a B-tree candidate.

HypoPG sees only the plan of the statement it explains: a function's plan is one Result
node, and the statements inside are planned only when it runs. So a candidate of a
function's query (search_messages, mark_as_read, send_message) is proven by building the
real index in a rolled-back transaction and running the call twice under auto_explain,
comparing the planner's cost of its statements that read the table (each planned for the
call: ``plan_cache_mode = force_custom_plan``); without writes, on the scratch copy. A
candidate found only inside functions is also tried on a suite query outside them that
scans the same table, when there is one.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from backend_checks import scratch
from backend_checks.plans import analyze_plan, nested_plans, walk
from backend_checks.suite import QueryRun, QuerySpec, app_transaction, plans_inside, timeout_ms
from devicelab.errors import first_line

if TYPE_CHECKING:
    import psycopg

    from backend_checks.suggest import Suggestion

__all__ = [
    "PROOF_MIN_GAIN",
    "SCRATCH_MAX_ROWS",
    "bare",
    "prove",
    "prove_any_way",
    "prove_on_copy",
    "qualified",
]

#: The share of the plan's cost an index must save to count as proven.
PROOF_MIN_GAIN = 0.10
#: The most rows a scratch copy takes: beyond, copying and indexing outlast a check.
SCRATCH_MAX_ROWS = 5_000_000
#: The extension of hypothetical indexes (a name, so tests can stand in a missing one).
_HYPOPG = "hypopg"
_NO_HYPOPG = "unproven: HypoPG unavailable"


def qualified(table: str) -> str:
    """Returns ``table`` with its schema: as given when it names one, else in ``public``
    (``messages`` -> ``public.messages``). Never raises."""
    return table if "." in table else f"public.{table}"


def bare(column: str) -> str:
    """Returns the column name of an index column as a suggestion writes it, without its
    ordering (``created_at DESC`` -> ``created_at``). Never raises."""
    return column.split(maxsplit=1)[0]


def prove_any_way(
    conn: psycopg.Connection[Any],
    item: Suggestion,
    by_id: dict[str, QuerySpec],
    runs: list[QueryRun],
    *,
    build_allowed: bool,
) -> None:
    """Prove ``item`` the best way there is. HypoPG sees only the plans of the statement
    it explains, never those inside a function, and cannot model GIN: it proves a B-tree
    on the queries outside functions. Otherwise, with writes allowed, the real index is
    built in a rolled-back transaction and the queries are planned again (a function's
    statements through auto_explain); without, the scratch copy proves the predicate. The
    copy also stands in when the build could not run at all (a role that may not load
    auto_explain: no superuser, as on Supabase or RDS; a lock it did not get): it needs
    neither. A build that ran and measured too small a gain stands: the real query's plan
    says more than the predicate alone. Never raises for a failed proof."""
    run_of = {run.id: run for run in runs}
    direct = [q for q in item.queries if not by_id[q].function]
    inside = [q for q in item.queries if by_id[q].function]
    if not item.queries:  # found only inside functions: a query scanning the same table
        direct = [
            run.id
            for run in runs
            if run.app_plan
            and not by_id[run.id].function
            and any(qualified(s.table) == item.table for s in run.app_plan.seq_scans)
        ][:1]
        inside = [run.id for run in runs if by_id[run.id].function and _reads(run, item.table)]
        if not direct and not (build_allowed and inside):
            prove_on_copy(conn, item)
            return
    hypopg = False
    if item.method == "btree" and direct:
        for query_id in direct:
            prove(conn, by_id[query_id], run_of[query_id].params, item)
        hypopg = not item.proof.startswith(_NO_HYPOPG)
    if item.proven:
        return
    unbuilt = None
    if build_allowed:
        measured = len(item.proofs)
        for query_id in inside + ([] if hypopg else direct):
            prove(conn, by_id[query_id], run_of[query_id].params, item, build=True)
        if item.proven or len(item.proofs) > measured:
            return
        unbuilt = item.proof.removeprefix("unproven: ")  # why no build ran to a plan
    if inside or not hypopg:
        prove_on_copy(conn, item, unbuilt=unbuilt)


def _reads(run: QueryRun, table: str) -> bool:
    """Whether a function's statements (as auto_explain logged them) scan ``table``."""
    return any(
        qualified(scan.table) == table for nested in run.nested for scan in nested.summary.seq_scans
    )


def _cost(
    conn: psycopg.Connection[Any],
    spec: QuerySpec,
    params: dict[str, str],
    table: str,
    notices: list[str],
) -> tuple[float, list[str]]:
    """The planner's total cost of ``spec`` and the indexes its plan uses. For a function,
    whose own plan is one Result node, the statements inside it that read ``table``: the
    call runs and auto_explain logs their plans into ``notices`` (:func:`plans_inside`,
    set up by the caller), each planned for this call (no cached generic plan)."""
    if not spec.function:
        sql: Any = "EXPLAIN (FORMAT JSON) " + spec.sql
        row = conn.execute(sql, params).fetchone()
        summary = analyze_plan(row[0] if row else None)
        return float(summary.total_cost or 0.0), summary.indexes
    conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    call: Any = spec.sql
    conn.execute(f"SET LOCAL statement_timeout = {timeout_ms(spec)}")
    start = len(notices)
    conn.execute(call, params).fetchall()
    bare = table.rsplit(".", maxsplit=1)[-1]
    cost, indexes = 0.0, []
    for nested in nested_plans(notices[start:]):
        relations = {node.get("Relation Name") for node in walk(nested.plan["Plan"])}
        if bare in relations:
            cost += float(nested.summary.total_cost or 0.0)
            indexes += [name for name in nested.summary.indexes if name not in indexes]
    return cost, indexes


def prove(
    conn: psycopg.Connection[Any],
    spec: QuerySpec,
    params: dict[str, str],
    item: Suggestion,
    *,
    build: bool = False,
) -> None:
    """Prove ``item`` on ``spec``: with a HypoPG hypothetical index, or (``build``) with
    the real index built inside a transaction that is rolled back (for a function, the
    only way: it runs, and the plans of its statements are compared). The outcome is
    written into ``item``; never raises for a failed proof."""
    import psycopg
    from psycopg import sql

    try:
        with conn.transaction(force_rollback=True), contextlib.ExitStack() as stack:
            notices = (
                stack.enter_context(plans_inside(conn, analyze=False)) if spec.function else []
            )
            if not build:
                try:
                    with conn.transaction():
                        conn.execute(
                            sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(
                                sql.Identifier(_HYPOPG)
                            )
                        )
                except psycopg.Error as exc:
                    item.proof = f"{_NO_HYPOPG} ({first_line(exc)})"
                    return
                conn.execute("SELECT hypopg_reset()")
            app_transaction(conn, params.get("user_id"), read_only=False)
            before, _ = _cost(conn, spec, params, item.table, notices)
            conn.execute("RESET ROLE")
            ddl: Any = item.ddl
            if build:
                name = f"devicelab_probe_{len(item.proofs)}"
                conn.execute(ddl.replace("INDEX ON", f"INDEX {name} ON", 1))
                hypo = name
            else:
                # The planner costs a unique index as a plain one.
                plain = ddl.replace("CREATE UNIQUE INDEX", "CREATE INDEX", 1)
                row = conn.execute("SELECT indexname FROM hypopg_create_index(%s)", (plain,))
                found = row.fetchone()
                hypo = str(found[0]) if found else ""
            conn.execute("SET LOCAL ROLE authenticated")
            after, indexes = _cost(conn, spec, params, item.table, notices)
            conn.execute("RESET ROLE")
            if not build:
                conn.execute("SELECT hypopg_reset()")
    except psycopg.Error as exc:
        item.proof = f"unproven: {first_line(exc)}"
        return
    used = hypo in indexes
    proven = _is_proof(used, before, after)
    how = "built in a rolled-back transaction" if build else "HypoPG"
    line = f"{how} on {spec.id}: planner cost {before:.0f} -> {after:.0f}" + _shortfall(
        used, before, after
    )
    item.proofs.append(line)
    if (proven and not item.proven) or item.cost_before is None:
        item.cost_before, item.cost_after, item.hypothetical_index = before, after, hypo
        item.proof = line
    item.proven = item.proven or proven


def prove_on_copy(
    conn: psycopg.Connection[Any], item: Suggestion, *, unbuilt: str | None = None
) -> None:
    """Prove ``item`` on a scratch copy, without writing to its table or blocking its
    writers: inside a transaction that is rolled back, the index's columns are copied into
    a temporary table, and a probe of what the index serves is explained before and after
    building the index on the copy. The probes: GIN, ``@>`` the first element of a real
    row, or ``@@`` the rarest lexeme of a sample (a search for one word); B-tree (a server
    without HypoPG), the leading column ``=`` a real row's value, in the order of the
    other columns, ``LIMIT 50``. It proves that the index replaces the full scan for that
    predicate at this table's size, not what it saves of the whole query (the query's
    views and functions name the real table). ``unbuilt``: why building the index on the
    table (writes allowed) could not prove it, said in the outcome. The outcome is written
    into ``item``; never raises for a failed proof."""
    import psycopg
    from psycopg import sql

    names = [bare(c) for c in item.columns]
    how = "rerun with --allow-writes to build it inside a rolled-back transaction on the table"
    if unbuilt is not None:
        how = f"building it in a rolled-back transaction on the table failed too: {unbuilt}"
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ WRITE")
            kinds = scratch.column_kinds(conn, item.table, names)
            rows = scratch.row_estimate(conn, item.table)
            if missing := [n for n in names if n not in kinds]:
                item.proof = f"unproven: {item.table} has no column {', '.join(missing)}"
                return
            kind, category = kinds[names[0]]
            if item.method == "gin" and kind != "tsvector" and category != "A":
                item.proof = f"unproven: no GIN probe for a {kind} column; {how}"
                return
            if rows > SCRATCH_MAX_ROWS:
                item.proof = (
                    f"unproven: {item.table} holds ~{rows:,.0f} rows, too many to copy"
                    f" during a check (at most {SCRATCH_MAX_ROWS:,}); {how}"
                )
                return
            copy = sql.Identifier("pg_temp", "devicelab_scratch")
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE devicelab_scratch ON COMMIT DROP AS SELECT {} FROM {}"
                ).format(
                    sql.SQL(", ").join(map(sql.Identifier, names)),
                    sql.Identifier(*item.table.split(".")),
                )
            )
            conn.execute(sql.SQL("ANALYZE {}").format(copy))
            if item.method == "gin":
                probe = scratch.gin_probe(conn, names[0], copy, kind)
            else:
                probe = scratch.btree_probe(conn, item.columns, copy)
            if probe is None:
                item.proof = f"unproven: {item.table}.{names[0]} holds no value to probe with"
                return
            tail, value, shown = probe
            explain = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} ").format(copy) + tail
            before = analyze_plan(scratch.scalar(conn, explain, value)).total_cost or 0.0
            conn.execute(
                sql.SQL("CREATE INDEX devicelab_scratch_idx ON {} USING {} ({})").format(
                    copy,
                    sql.SQL("gin" if item.method == "gin" else "btree"),
                    scratch.index_keys(item.columns),
                )
            )
            summary = analyze_plan(scratch.scalar(conn, explain, value))
    except psycopg.Error as exc:
        item.proof = f"unproven: the scratch copy failed ({first_line(exc)}); {how}"
        return
    after = summary.total_cost or 0.0
    used = "devicelab_scratch_idx" in summary.indexes
    proven = _is_proof(used, before, after)
    line = (
        f"built on a scratch copy (a temporary table of {item.table} ({', '.join(names)}),"
        f" {rows:,.0f} rows, in a rolled-back transaction): {shown} planner cost"
        f" {before:.0f} -> {after:.0f}" + _shortfall(used, before, after)
    )
    if unbuilt is not None:
        line += f"; not built on the table: {unbuilt}"
    item.proofs.append(line)
    item.cost_before, item.cost_after, item.hypothetical_index = before, after, None
    item.proof, item.proven = line, proven


def _shortfall(used: bool, before: float, after: float) -> str:
    """Why a cost change proves nothing, for the end of a proof line ("" when it proves):
    the planner did not pick the index, or the cost fell less than PROOF_MIN_GAIN (a bare
    "2053 -> 1871" reads like a gain the reader must then take on trust as too small)."""
    if not used:
        return " (the planner did not pick the index)"
    if _is_proof(used, before, after):
        return ""
    gain = f"{PROOF_MIN_GAIN * 100:g} %"
    if before <= 0 or after >= before:
        return f" (the cost did not fall; a proof needs it {gain} lower)"
    fell = 100 * (before - after) / before
    return f" (the cost fell {fell:.1f} %, under the {gain} a proof needs)"


def _is_proof(used: bool, before: float, after: float) -> bool:
    """The planner picked the index and the cost dropped by PROOF_MIN_GAIN at least."""
    return used and after <= before * (1 - PROOF_MIN_GAIN)
