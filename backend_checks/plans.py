"""Plan analysis: what an ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` plan says.

:func:`analyze_plan` walks a plan (InitPlans and SubPlans included) and reports the index
names used, the sequential scans on tables above a size threshold (the node, its filter,
the rows it examined), shared buffer hits and reads, and planning vs execution time.

A sequential scan is *flagged* when its table holds at least ``min_table_rows`` rows in at
least ``min_table_pages`` pages and the node examined at least ``min_table_rows`` rows
(returned + removed by its filter, over all its loops). A scan that a LIMIT stops after a
few rows costs nothing; a table of fewer than 100 pages (800 kB) is read faster whole than
through an index, and the planner is right to scan it. Both are reported, not flagged.

Functions hide their statements behind one Result node. :func:`nested_plans` parses the
plans auto_explain sends as NOTICEs when it runs in the session with
``log_nested_statements`` (see :mod:`backend_checks.suite` for how it is switched on);
referential-integrity probes (``SELECT 1 FROM ONLY ...``) are left out, and repeated
statements are kept once.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "DEFAULT_MIN_TABLE_PAGES",
    "DEFAULT_MIN_TABLE_ROWS",
    "NestedPlan",
    "PlanSummary",
    "SeqScan",
    "analyze_plan",
    "nested_plans",
    "walk",
]

DEFAULT_MIN_TABLE_ROWS = 1_000
DEFAULT_MIN_TABLE_PAGES = 100
_INDEX_NODES = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")


class SeqScan(BaseModel):
    """One Seq Scan node: its table, filter and how much it read."""

    table: str
    alias: str | None = None
    filter: str | None = None
    rows_examined: float = Field(description="rows returned + removed by filter, all loops")
    rows_returned: float = Field(0, description="rows its filter kept, all loops (0: no ANALYZE)")
    loops: float = 1
    table_rows: float = Field(0, description="the table's row estimate (pg_class.reltuples)")
    table_pages: float | None = Field(None, description="the table's pages (pg_class.relpages)")
    flagged: bool = False
    planner_choice: bool = Field(
        False, description="not flagged: the planner had the index and rightly read it all"
    )
    sort_key: list[str] = Field(default_factory=list, description="Sort Key above it, if any")
    where: str = Field("", description="which plan it is in: the query, or a nested statement")


class PlanSummary(BaseModel):
    """The facts of one plan that the checks judge."""

    indexes: list[str] = Field(default_factory=list)
    seq_scans: list[SeqScan] = Field(default_factory=list)
    shared_hit: int = 0
    shared_read: int = 0
    planning_ms: float | None = None
    execution_ms: float | None = None
    total_cost: float | None = None
    node_types: list[str] = Field(default_factory=list)

    def flagged(self) -> list[SeqScan]:
        """The sequential scans that hurt (see the module docstring)."""
        return [scan for scan in self.seq_scans if scan.flagged]


class NestedPlan(BaseModel):
    """A statement run inside a function, with the plan auto_explain logged for it."""

    query: str
    duration_ms: float | None = None
    plan: dict[str, Any]
    summary: PlanSummary


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a plan tree, depth first (the node itself first)."""
    nodes = [node]
    for child in node.get("Plans", []) or []:
        nodes.extend(walk(child))
    return nodes


def _sort_keys_above(root: dict[str, Any]) -> dict[int, list[str]]:
    """For each node (by id), the Sort Key of the nearest Sort node above it."""
    found: dict[int, list[str]] = {}

    def visit(node: dict[str, Any], keys: list[str]) -> None:
        if node.get("Node Type") in ("Sort", "Incremental Sort"):
            keys = list(node.get("Sort Key", []))
        found[id(node)] = keys
        for child in node.get("Plans", []) or []:
            visit(child, keys)

    visit(root, [])
    return found


def analyze_plan(
    explained: Any,
    table_rows: dict[str, float] | None = None,
    *,
    min_table_rows: int = DEFAULT_MIN_TABLE_ROWS,
    where: str = "query",
    table_pages: dict[str, float] | None = None,
    min_table_pages: int = DEFAULT_MIN_TABLE_PAGES,
) -> PlanSummary:
    """Summarize an EXPLAIN (FORMAT JSON) result: the list psycopg returns, its first
    element, or the bare ``{"Plan": ...}`` object auto_explain logs.

    ``table_rows`` and ``table_pages`` map table names (bare and schema-qualified) to their
    row estimates and page counts (no page count known: the page rule is not applied).
    Returns a PlanSummary. Raises ValueError when ``explained`` holds no plan.
    """
    if isinstance(explained, str):
        explained = json.loads(explained)
    if isinstance(explained, list):
        explained = explained[0] if explained else {}
    if not isinstance(explained, dict) or "Plan" not in explained:
        raise ValueError("not an EXPLAIN (FORMAT JSON) plan")
    rows = table_rows or {}
    root = explained["Plan"]
    sort_keys = _sort_keys_above(root)
    summary = PlanSummary(
        shared_hit=int(root.get("Shared Hit Blocks", 0)),
        shared_read=int(root.get("Shared Read Blocks", 0)),
        planning_ms=explained.get("Planning Time"),
        execution_ms=explained.get("Execution Time"),
        total_cost=root.get("Total Cost"),
    )
    for node in walk(root):
        kind = str(node.get("Node Type", ""))
        if kind not in summary.node_types:
            summary.node_types.append(kind)
        name = node.get("Index Name")
        if kind in _INDEX_NODES and name and name not in summary.indexes:
            summary.indexes.append(str(name))
        if kind == "Seq Scan":
            table = str(node.get("Relation Name", "?"))
            qualified = f"{node['Schema']}.{table}" if node.get("Schema") else table
            loops = float(node.get("Actual Loops", 1) or 1)
            size = rows.get(qualified, rows.get(table, 0.0))
            if "Actual Rows" in node:
                returned = float(node["Actual Rows"]) * loops
                examined = returned + float(node.get("Rows Removed by Filter", 0)) * loops
            else:  # a plan without ANALYZE: a sequential scan reads the whole table
                examined, returned = size, 0.0  # what it keeps is unknown
            pages_map = table_pages or {}
            pages = pages_map.get(qualified, pages_map.get(table))
            big = size >= min_table_rows and (pages is None or pages >= min_table_pages)
            summary.seq_scans.append(
                SeqScan(
                    table=qualified,
                    alias=node.get("Alias"),
                    filter=node.get("Filter"),
                    rows_examined=examined,
                    rows_returned=returned,
                    loops=loops,
                    table_rows=size,
                    table_pages=pages,
                    flagged=big and examined >= min_table_rows,
                    sort_key=sort_keys.get(id(node), []),
                    where=where,
                )
            )
    return summary


def nested_plans(
    notices: list[str],
    table_rows: dict[str, float] | None = None,
    *,
    min_table_rows: int = DEFAULT_MIN_TABLE_ROWS,
    skip_queries: tuple[str, ...] = (),
    table_pages: dict[str, float] | None = None,
) -> list[NestedPlan]:
    """The plans in auto_explain NOTICE texts (``duration: X ms  plan:\\n{json}``).

    Statements whose text starts with one of ``skip_queries`` (e.g. our own set-up
    statements) and referential-integrity probes are left out; each distinct statement is
    kept once. Returns NestedPlans in the order they ran.
    """
    plans: list[NestedPlan] = []
    seen: set[str] = set()
    for text in notices:
        head, sep, body = text.partition("plan:")
        if not sep:
            continue
        try:
            plan = json.loads(body)
        except ValueError:
            continue
        query = str(plan.get("Query Text", "")).strip()
        if query.startswith("SELECT 1 FROM ONLY") or query.startswith(skip_queries):
            continue
        if query in seen:
            continue
        seen.add(query)
        duration = None
        if "duration:" in head:
            try:
                duration = float(head.split("duration:")[1].split("ms")[0])
            except ValueError:
                duration = None
        plans.append(
            NestedPlan(
                query=query,
                duration_ms=duration,
                plan=plan,
                summary=analyze_plan(
                    plan,
                    table_rows,
                    min_table_rows=min_table_rows,
                    where=f"nested: {query[:80]}",
                    table_pages=table_pages,
                ),
            )
        )
    return plans
