"""Index suggestions with proof: for each flagged sequential scan, the index that removes it.

The candidate comes from the scan itself: the columns its filter compares with ``=``
(first, in the filter's order), then the key of the Sort above it (ORDER BY, with its
direction), else a column it compares with ``<``/``>``. ``@>`` on an array or ``@@`` on a
tsvector gives a GIN candidate instead.

A B-tree candidate is proven with HypoPG: inside a transaction that is rolled back
(``CREATE EXTENSION IF NOT EXISTS hypopg`` included, so nothing stays behind), the query
is explained as the app role before and after ``hypopg_create_index``; it is proven when
the planner picks the hypothetical index and the plan's total cost drops by at least
``PROOF_MIN_GAIN`` (10 %; the scan an index removes is often one part of a bigger plan:
unread_count's receipts scan is a quarter of its cost, and the index halves that). HypoPG
cannot model GIN for ``@>`` or full text: when writes are allowed (the managed cluster, or
``--allow-writes``) a GIN candidate is proven by building the real index inside a
transaction that is rolled back (the build locks the table against writes while it runs);
otherwise it is proven on a scratch copy (:func:`prove_on_copy`: the column copied into a
temporary table, the table itself only read), or reported as unproven when even that cannot
run. A server without HypoPG gets the same two routes for a B-tree candidate.

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
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from backend_checks import scratch
from backend_checks.health import IndexStats
from backend_checks.plans import SeqScan, analyze_plan, nested_plans, walk
from backend_checks.suite import QueryRun, QuerySpec, app_transaction, plans_inside, timeout_ms

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "PROOF_MIN_GAIN",
    "SCRATCH_MAX_ROWS",
    "Suggestion",
    "candidate",
    "conjuncts",
    "covering_index",
    "prove",
    "prove_on_copy",
    "suggest",
]

_IDENT = r"(?:[a-z_][a-z0-9_]*\.)?([a-z_][a-z0-9_]*)"
_EQ = re.compile(rf"\(?{_IDENT} = ")
_RANGE = re.compile(rf"\(?{_IDENT} (?:<|>|<=|>=) ")
_GIN = re.compile(rf"\(?{_IDENT} (@>|@@|<@|&&) ")


#: The share of the plan's cost an index must save to count as proven.
PROOF_MIN_GAIN = 0.10
#: The most rows a scratch copy takes: beyond, copying and indexing outlast a check.
SCRATCH_MAX_ROWS = 5_000_000
#: The extension of hypothetical indexes (a name, so tests can stand in a missing one).
_HYPOPG = "hypopg"
_NO_HYPOPG = "unproven: HypoPG unavailable"


class Suggestion(BaseModel):
    """A proposed index, why, and the proof (or why there is none)."""

    table: str
    columns: list[str]
    method: str = "btree"
    unique: bool = False
    ddl: str
    because: list[str] = Field(default_factory=list, description="query id: seq scan filter")
    queries: list[str] = Field(default_factory=list)
    proven: bool = False
    proof: str = "unproven"
    cost_before: float | None = None
    cost_after: float | None = None
    hypothetical_index: str | None = None
    proofs: list[str] = Field(default_factory=list, description="one line per query tried")


def _columns_of(conn: psycopg.Connection[Any], table: str) -> set[str]:
    row = conn.execute(
        """SELECT array_agg(attname::text) FROM pg_attribute
           WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped""",
        (table,),
    ).fetchone()
    return set(row[0] or []) if row else set()


def _depths(text: str) -> Iterator[tuple[int, int]]:
    """(index, parenthesis depth before it) of each character of ``text`` outside quoted
    literals and names."""
    depth, quote = 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
            continue
        if ch in "'\"":
            quote = ch
            continue
        yield i, depth
        depth += (ch == "(") - (ch == ")")


def _unwrap(text: str) -> str:
    """``text`` without the parentheses that enclose all of it."""
    text = text.strip()
    while text.startswith("("):
        close = next((i for i, d in _depths(text) if text[i] == ")" and d == 1), -1)
        if close != len(text) - 1:
            break
        text = text[1:-1].strip()
    return text


def _split_top(text: str, word: str) -> list[str]:
    """``text`` split at ``word`` (`` AND ``, `` OR ``) outside parentheses and quotes."""
    parts, last = [], 0
    for i, depth in _depths(text):
        if depth == 0 and i >= last and text.startswith(word, i):
            parts.append(text[last:i])
            last = i + len(word)
    return [*parts, text[last:]]


def conjuncts(text: str) -> list[str]:
    """The top-level AND terms of a plan's filter that an index can serve: a term that is
    itself an OR (``($2 IS NULL) OR (conversation_id = $2)``) is left out, since an
    index on its columns does not remove the scan."""
    terms = [_unwrap(t) for t in _split_top(_unwrap(text), " AND ")]
    return [t for t in terms if t and len(_split_top(t, " OR ")) == 1]


def candidate(scan: SeqScan, columns: set[str]) -> tuple[list[str], str] | None:
    """The index columns (with DESC where the sort wants it) and method for ``scan``, or
    None when its filter names no column of the table an index could use."""
    text = " AND ".join(f"({t})" for t in conjuncts(scan.filter or ""))
    gin = [m.group(1) for m in _GIN.finditer(text) if m.group(1) in columns]
    eq = [c for c in dict.fromkeys(m.group(1) for m in _EQ.finditer(text)) if c in columns]
    if not eq and gin:
        return [gin[0]], "gin"
    ordered: list[str] = []
    for key in scan.sort_key:
        parts = key.split()
        name = parts[0].split(".")[-1].strip('"')
        if name not in columns:
            break  # an expression (ts_rank(...)): no index delivers this order from here on
        if name not in eq:
            ordered.append(f"{name} DESC" if "DESC" in parts[1:] else name)
    if not ordered:
        ranged = [m.group(1) for m in _RANGE.finditer(text) if m.group(1) in columns]
        ordered = [c for c in dict.fromkeys(ranged) if c not in eq][:1]
    picked = eq + ordered
    return (picked, "btree") if picked else None


def _ddl(table: str, cols: list[str], method: str, unique: bool = False) -> str:
    using = " USING gin" if method == "gin" else ""
    kind = "UNIQUE INDEX" if unique else "INDEX"
    return f"CREATE {kind} ON {table}{using} ({', '.join(cols)})"


def suggest(
    conn: psycopg.Connection[Any],
    specs: list[QuerySpec],
    runs: list[QueryRun],
    *,
    build_allowed: bool = False,
    missing: list[tuple[str, str, list[str], str, bool]] | None = None,
    existing: Iterable[IndexStats] = (),
) -> list[Suggestion]:
    """Suggestions for every flagged sequential scan of ``runs``, deduplicated by table and
    columns, each proven with HypoPG where it can be; GIN candidates are proven by
    building them inside a rolled-back transaction when ``build_allowed`` (it locks the
    table against writes while it builds). ``missing`` adds the critical indexes a query
    file names that the database lacks: (query id, table, columns, method, unique). A
    candidate
    that an index of ``existing`` (the database's, :func:`health.index_snapshot`) already
    leads with is left out. Raises psycopg
    errors only for catalog reads; a failed proof is recorded in the suggestion."""
    by_id = {spec.id: spec for spec in specs}
    found: dict[tuple[str, tuple[str, ...], str], Suggestion] = {}
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        for run in runs:
            for scan in run.flagged():
                cols = _columns_of(conn, _qualified(scan.table))
                picked = candidate(scan, cols)
                if picked is None:
                    continue
                key = (_qualified(scan.table), tuple(picked[0]), picked[1])
                item = found.get(key) or Suggestion(
                    table=key[0],
                    columns=picked[0],
                    method=picked[1],
                    ddl=_ddl(key[0], picked[0], picked[1]),
                )
                found[key] = item
                item.because.append(
                    f"{run.id}: {scan.where}: Seq Scan on {scan.table} "
                    f"filter {scan.filter} ({scan.rows_examined:.0f} rows)"
                )
                if scan.where == "query" and run.id not in item.queries:
                    item.queries.append(run.id)
    for query_id, table, columns, method, unique in missing or []:
        key = (table, tuple(columns), method)
        item = found.get(key) or Suggestion(
            table=table, columns=columns, method=method, ddl=_ddl(table, columns, method)
        )
        found[key] = item
        if unique:  # ON CONFLICT on these columns: a plain index would not do
            item.unique, item.ddl = True, _ddl(table, columns, method, unique=True)
        kind = "a unique index" if unique else "an index"
        item.because.append(f"{query_id}: needs {kind} on {table} ({', '.join(columns)})")
        if query_id not in item.queries:
            item.queries.append(query_id)
    merged = [item for item in _merge(list(found.values())) if not _covered(item, existing)]
    for item in merged:
        _prove_any_way(conn, item, by_id, runs, build_allowed=build_allowed)
    return merged


def _prove_any_way(
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
    statements through auto_explain); without, the scratch copy proves the predicate."""
    run_of = {run.id: run for run in runs}
    direct = [q for q in item.queries if not by_id[q].function]
    inside = [q for q in item.queries if by_id[q].function]
    if not item.queries:  # found only inside functions: a query scanning the same table
        direct = [
            run.id
            for run in runs
            if run.app_plan
            and not by_id[run.id].function
            and any(_qualified(s.table) == item.table for s in run.app_plan.seq_scans)
        ][:1]
        if not direct and not build_allowed:
            prove_on_copy(conn, item)
            return
        inside = [run.id for run in runs if by_id[run.id].function and _reads(run, item.table)]
        if not direct and not inside:
            item.proof = "unproven: no suite query scans this table"
            return
    hypopg = False
    if item.method == "btree" and direct:
        for query_id in direct:
            prove(conn, by_id[query_id], run_of[query_id].params, item)
        hypopg = not item.proof.startswith(_NO_HYPOPG)
    if item.proven:
        return
    if build_allowed:
        for query_id in inside + ([] if hypopg else direct):
            prove(conn, by_id[query_id], run_of[query_id].params, item, build=True)
    elif inside or not hypopg:
        prove_on_copy(conn, item)


def _reads(run: QueryRun, table: str) -> bool:
    """Whether a function's statements (as auto_explain logged them) scan ``table``."""
    return any(
        _qualified(scan.table) == table
        for nested in run.nested
        for scan in nested.summary.seq_scans
    )


def covering_index(
    conn: psycopg.Connection[Any], scan: SeqScan, existing: Iterable[IndexStats]
) -> IndexStats | None:
    """The valid, whole index of ``existing`` that already leads with the index we would
    suggest for ``scan`` (see :func:`candidate`), or None (no candidate, or none there).
    When there is one, the planner had that index and read the table instead. Raises
    psycopg errors of the catalog read."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        picked = candidate(scan, _columns_of(conn, _qualified(scan.table)))
    if picked is None:
        return None
    table, (columns, method) = _qualified(scan.table), picked
    return next((ix for ix in existing if _covers(ix, table, columns, method)), None)


def _covered(item: Suggestion, existing: Iterable[IndexStats]) -> bool:
    """True when a valid, non-partial index of the same method already leads with the
    suggestion's columns (direction aside: a B-tree is read backwards as well): the scan
    has another cause, and suggesting the index again would mislead."""
    return any(_covers(ix, item.table, item.columns, item.method) for ix in existing)


def _covers(ix: IndexStats, table: str, columns: list[str], method: str) -> bool:
    wanted = [_bare(c) for c in columns]
    return (
        ix.table == table
        and ix.method == method
        and ix.valid
        and not ix.partial
        and ix.columns[: len(wanted)] == wanted
    )


def _bare(column: str) -> str:
    return column.split(maxsplit=1)[0]


def _merge(items: list[Suggestion]) -> list[Suggestion]:
    """Fold each B-tree candidate into a longer one on the same table whose leading columns
    it is (direction aside): one index serves both. DESC is kept when any sort wants it."""
    items = sorted(items, key=lambda i: -len(i.columns))
    kept: list[Suggestion] = []
    for item in items:
        bare = [_bare(c) for c in item.columns]
        home = next(
            (
                k
                for k in kept
                if k.table == item.table
                and k.method == item.method == "btree"
                and [_bare(c) for c in k.columns][: len(bare)] == bare
                # Unique on fewer columns is another constraint: kept apart.
                and (not item.unique or len(k.columns) == len(item.columns))
            ),
            None,
        )
        if home is None:
            kept.append(item)
            continue
        home.columns = [
            c
            if c.endswith("DESC") or i >= len(item.columns) or not item.columns[i].endswith("DESC")
            else item.columns[i]
            for i, c in enumerate(home.columns)
        ]
        home.unique = home.unique or item.unique
        home.ddl = _ddl(home.table, home.columns, home.method, home.unique)
        home.because += [b for b in item.because if b not in home.because]
        home.queries += [q for q in item.queries if q not in home.queries]
    return kept


def _qualified(table: str) -> str:
    return table if "." in table else f"public.{table}"


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
                    item.proof = f"{_NO_HYPOPG} ({_line(exc)})"
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
        item.proof = f"unproven: {_line(exc)}"
        return
    used = hypo in indexes
    proven = _is_proof(used, before, after)
    how = "built in a rolled-back transaction" if build else "HypoPG"
    line = f"{how} on {spec.id}: planner cost {before:.0f} -> {after:.0f}" + (
        "" if used else " (the planner did not pick the index)"
    )
    item.proofs.append(line)
    if (proven and not item.proven) or item.cost_before is None:
        item.cost_before, item.cost_after, item.hypothetical_index = before, after, hypo
        item.proof = line
    item.proven = item.proven or proven


def prove_on_copy(conn: psycopg.Connection[Any], item: Suggestion) -> None:
    """Prove ``item`` on a scratch copy, without writing to its table or blocking its
    writers: inside a transaction that is rolled back, the index's columns are copied into
    a temporary table, and a probe of what the index serves is explained before and after
    building the index on the copy. The probes: GIN, ``@>`` the first element of a real
    row, or ``@@`` the rarest lexeme of a sample (a search for one word); B-tree (a server
    without HypoPG), the leading column ``=`` a real row's value, in the order of the
    other columns, ``LIMIT 50``. It proves that the index replaces the full scan for that
    predicate at this table's size, not what it saves of the whole query (the query's
    views and functions name the real table). The outcome is written into ``item``;
    never raises for a failed proof."""
    import psycopg
    from psycopg import sql

    names = [_bare(c) for c in item.columns]
    how = "rerun with --allow-writes to build it inside a rolled-back transaction on the table"
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
        item.proof = f"unproven: the scratch copy failed ({_line(exc)}); {how}"
        return
    after = summary.total_cost or 0.0
    used = "devicelab_scratch_idx" in summary.indexes
    proven = _is_proof(used, before, after)
    line = (
        f"built on a scratch copy (a temporary table of {item.table} ({', '.join(names)}),"
        f" {rows:,.0f} rows, in a rolled-back transaction): {shown} planner cost"
        f" {before:.0f} -> {after:.0f}" + ("" if used else " (the planner did not pick the index)")
    )
    item.proofs.append(line)
    item.cost_before, item.cost_after, item.hypothetical_index = before, after, None
    item.proof, item.proven = line, proven


def _is_proof(used: bool, before: float, after: float) -> bool:
    """The planner picked the index and the cost dropped by PROOF_MIN_GAIN at least."""
    return used and after <= before * (1 - PROOF_MIN_GAIN)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
