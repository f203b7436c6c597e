"""Health checks from the statistics views: each returns a Check with a verdict and evidence.

Judged over the check's own window where that is fair: :func:`snapshot` is taken after the
warm-up runs and again after the timed runs, and the buffer hit ratio and the index share
of scans are computed from the difference (a freshly loaded or restarted server is not
judged on its cold start, and other traffic since the last reset does not hide ours).
The counters and the window are in :mod:`backend_checks.stats_window` (re-exported here):
tables and indexes are matched by OID, devicelab's own scratch is left out.

Unused indexes (:mod:`backend_checks.unused`, re-exported here):
``pg_stat_user_indexes.idx_scan`` per index (joined on ``indexrelid``, never the table's
counters), primary, unique, replica-identity and foreign-key-supporting indexes excluded
(they serve constraints, not queries). An index is only *called* unused when the
statistics cover at least ``min_stats_days`` days of traffic: counters a few minutes old
(a fresh load, a recent ``pg_stat_reset``) prove nothing, so then the check is skipped
and lists the candidates. The checks that need no window (sizes, bloat, slow
statements, long-running ones) are in :mod:`backend_checks.server_health`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from backend_checks.reasons import holds, judged_reason
from backend_checks.stats_window import (
    IndexStats,
    TableStats,
    Window,
    compare,
    index_scans,
    index_snapshot,
    snapshot,
)
from backend_checks.unused import invalid_fix, stats_window_start, unused_indexes
from devicelab.models import Check
from devicelab.targets import backend_target

__all__ = [
    "IndexStats",
    "TableStats",
    "Window",
    "buffer_hit_ratio",
    "index_snapshot",
    "index_usage",
    "indexes_for",
    "snapshot",
    "stats_window_start",
    "unused_indexes",
]

#: What a check says of a window in which tables were replaced (the cause we know of).
_DISTURBED = ("replaced during the window (a `backend datagen` swapping in new tables?), "
              "not counted")  # fmt: skip


def _names(names: list[str], most: int = 3) -> str:
    """``a, b, c and 2 more``."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def buffer_hit_ratio(before: dict[str, TableStats], after: dict[str, TableStats]) -> Check:
    """Cache hit ratio of tables and of indexes over the timed runs (REFERENCE.md formula:
    hit / (hit + read) from pg_statio_user_tables / _indexes), judged against the
    buffer_hit_ratio row of targets.yaml (> 95 %), from the tables that are the same at
    both ends of the window. Tables replaced during it are not counted and are named
    (``replaced_during_window``); the window is then not judged: a ratio that misses, or
    none left, gives an ``error`` that says so, never a fail. Returns the Check; raises
    nothing."""
    delta, replaced = compare(before, after)
    heap_hit = sum(t.heap_hit for t in delta.values())
    heap_read = sum(t.heap_read for t in delta.values())
    idx_hit = sum(t.idx_hit for t in delta.values())
    idx_read = sum(t.idx_read for t in delta.values())
    table_pct = 100.0 * heap_hit / (heap_hit + heap_read) if heap_hit + heap_read else None
    index_pct = 100.0 * idx_hit / (idx_hit + idx_read) if idx_hit + idx_read else None
    cumulative_hit = sum(t.heap_hit + t.idx_hit for t in after.values())
    cumulative_all = cumulative_hit + sum(t.heap_read + t.idx_read for t in after.values())
    ratios = [r for r in (table_pct, index_pct) if r is not None]
    target = backend_target("buffer_hit_ratio")
    evidence: dict[str, Any] = {
        "window": "each query's timed runs, right after its warm-up (summed)",
        "tables_pct": table_pct,
        "indexes_pct": index_pct,
        "blocks": {
            "heap_hit": heap_hit,
            "heap_read": heap_read,
            "idx_hit": idx_hit,
            "idx_read": idx_read,
        },
        "cumulative_pct": 100.0 * cumulative_hit / cumulative_all if cumulative_all else None,
    }
    base = {"id": "buffer_hit_ratio", "category": "health", "unit": "%", "target": target}
    disturbed = f"{_names(replaced)} {_DISTURBED}"
    if replaced:
        evidence["replaced_during_window"] = replaced
    if not ratios:
        return Check(
            **base,
            title="Buffer cache hit ratio",
            status="error" if replaced else "skip",
            evidence=evidence,
            reason=f"cannot measure: {disturbed}, and no other table or index blocks were "
            "read in the window; run the check again once the data load is done"
            if replaced
            else "no table or index blocks were read in the window",
        )
    value = round(min(ratios), 3)
    ok = holds(value, target)
    said = "hit ratio {value} (the lower of tables' and indexes')"
    why = "" if ok else ("the working set does not fit in shared_buffers, or a query reads "
                         "far more than it returns")  # fmt: skip
    status = "pass" if ok else "fail"
    if replaced:
        # A table swapped in mid-window is a data load at work: it evicts the pages the
        # queries read, so a miss then says nothing about shared_buffers.
        why = f"{disturbed}" + ("" if ok else "; not judged, run the check again once the "
                                "data load is done")  # fmt: skip
        status = "pass" if ok else "error"
    return Check(
        **base,
        title="Buffer cache hit ratio (tables and indexes)",
        status=status,
        value=value,
        evidence=evidence,
        reason=judged_reason(said, value, "%", target, why),
    )


def indexes_for(need: Any, indexes: Iterable[IndexStats]) -> list[IndexStats]:
    """The indexes that serve a query file's ``indexes:`` entry: same table, same leading
    columns (any name, any direction)."""
    wanted = [c.split()[0] for c in need.columns]
    return [ix for ix in indexes if ix.table == need.table and ix.columns[: len(wanted)] == wanted]


def _index_shares(
    delta: Mapping[str, TableStats],
    *,
    min_table_rows: int,
    min_table_pages: int,
    min_index_pct: float,
    planner_choice: Collection[str],
) -> tuple[list[dict[str, Any]], list[str]]:
    """(each scanned table of ``delta`` with its index share, the problems: judged tables
    scanned through an index less than ``min_index_pct`` % of the time). Raises nothing."""
    tables: list[dict[str, Any]] = []
    problems: list[str] = []
    for name, t in sorted(delta.items()):
        scans_total = t.seq_scan + t.idx_scan
        if scans_total == 0:
            continue
        share = 100.0 * t.idx_scan / scans_total
        chosen = name in planner_choice
        judged = t.rows >= min_table_rows and t.pages >= min_table_pages and not chosen
        tables.append(
            {
                "table": name,
                "rows": t.rows,
                "pages": t.pages,
                "idx_scan": t.idx_scan,
                "seq_scan": t.seq_scan,
                "seq_tup_read": t.seq_tup_read,
                "index_pct": round(share, 2),
                "judged": judged,
            }
            | ({"planner_choice": True} if chosen else {})
        )
        if judged and share < min_index_pct:
            problems.append(
                f"{name}: {share:.0f} % of scans used an index "
                f"({t.seq_scan} seq scan{'' if t.seq_scan == 1 else 's'} "
                f"read {t.seq_tup_read:,} rows)"
            )
    return tables, problems


def index_usage(
    before: dict[str, TableStats],
    after: dict[str, TableStats],
    before_idx: dict[str, IndexStats],
    after_idx: dict[str, IndexStats],
    *,
    specs: list[Any],
    min_table_rows: int,
    min_table_pages: int = 100,
    min_index_pct: float = 95.0,
    planner_choice: Collection[str] = (),
    served: Mapping[tuple[str, str], list[str]] | None = None,
    failed: Mapping[str, str] | None = None,
) -> Check:
    """Index usage over the timed runs. The value counts problems: each critical index
    (a query file's ``indexes:``, matched by table and leading columns, any name) that is
    missing or was not scanned, and each table of at least ``min_table_rows`` rows and
    ``min_table_pages`` pages whose scans used an index less than ``min_index_pct`` % of
    the time (smaller tables are rightly read whole, and so are the ``planner_choice``
    tables: every big scan of them in the suite's plans read what its query needs, with
    the index there). A critical index that is there but was not scanned is no problem
    where ``served`` ((query id, schema.table) -> index names) says the query's plans read
    that table through other indexes only: the planner had it and found a better one (a
    search by a user in few conversations reads their conversations' messages by the
    conversation index, not the whole text index). A critical index of a query that
    ``failed`` (query id -> its error) is not judged: the query never ran, so it is listed
    in ``not_judged`` with the error, not counted as a problem, and with nothing else
    wrong the check is an ``error``.

    Only tables and indexes that are the same at both ends of the window are counted
    (``scans_in_window`` None: not comparable). When some were replaced during it
    (``replaced_during_window``), what the window alone would show (an unscanned index, a
    low index share) is not judged but listed (``not_judged``); the check is then an
    ``error`` if nothing else is wrong but that, or nothing was left to compare. Returns
    the Check; raises nothing."""
    served, failed = served or {}, failed or {}
    delta, replaced = compare(before, after)
    scan_of, replaced_idx = index_scans(before_idx, after_idx)
    replaced += replaced_idx
    problems: list[str] = []
    unrun: list[str] = []  # critical indexes of queries that failed: not judged either way
    seen_in_window: set[str] = set()  # problems that the window's counters alone show
    critical = []
    for spec in specs:
        for need in spec.indexes:
            found = indexes_for(need, after_idx.values())
            # An INVALID index (a failed CREATE INDEX CONCURRENTLY) matches by its columns
            # but no plan can use it: it is named with its fix, never called "not scanned".
            matches = [ix for ix in found if ix.valid]
            broken = [ix.index for ix in found if not ix.valid]
            compared = [ix for ix in matches if ix.index in scan_of]
            scans = sum(scan_of[ix.index] for ix in compared) if compared else None
            label = f"{need.table} ({', '.join(need.columns)})"
            critical.append(
                {
                    "table": need.table,
                    "columns": need.columns,
                    "method": need.method,
                    "unique": need.unique,
                    "query": spec.id,
                    "needs": label,
                    "indexes": [ix.index for ix in matches],
                    "invalid_indexes": broken,
                    "scans_in_window": scans,
                }
            )
            size = after.get(need.table)
            big = size is not None and size.rows >= min_table_rows and size.pages >= min_table_pages
            critical[-1]["table_judged"] = big
            problems += [f"{ix} is INVALID (no query can use it): {invalid_fix(ix)}"
                         for ix in broken]  # fmt: skip
            if not matches and not broken:  # the schema lacks what the queries need, any size
                problems.append(f"{spec.id}: no index on {label}")
            elif not matches:
                names = ", ".join(broken)
                problems.append(f"{spec.id}: no valid index on {label}: {names} INVALID")
            elif scans is None:  # replaced or built during the window: its scans unknown
                pass
            elif scans == 0 and big and spec.id in failed:
                critical[-1]["query_failed"] = failed[spec.id]
                names = ", ".join(ix.index for ix in matches)
                # No finding about the index: the query's own check is the error.
                unrun.append(f"{spec.id}: its query failed ({failed[spec.id]}), so "
                             f"{names} was not judged")  # fmt: skip
            elif scans == 0 and big and (spec.id, need.table) in served:
                critical[-1]["served_by"] = served[(spec.id, need.table)]
            elif scans == 0 and big:  # a small table is rightly read whole
                problems.append(f"{spec.id}: {', '.join(ix.index for ix in matches)} not scanned")
                seen_in_window.add(problems[-1])
    tables, low = _index_shares(
        delta,
        min_table_rows=min_table_rows,
        min_table_pages=min_table_pages,
        min_index_pct=min_index_pct,
        planner_choice=planner_choice,
    )
    problems += low
    seen_in_window.update(low)
    problems = list(dict.fromkeys(problems))
    unjudged = [p for p in problems if p in seen_in_window] if replaced else []
    problems = [p for p in problems if p not in unjudged]
    target = backend_target("index_usage")
    said = (f"{{value}} (critical indexes missing or unscanned, tables >= {min_table_rows:,} "
            f"rows scanned through an index < {min_index_pct:g} % of the time)")  # fmt: skip
    check = Check(
        id="index_usage",
        title="Index usage (critical indexes scanned, index share per table)",
        category="index",
        status="fail" if problems else "pass",
        value=len(problems),
        unit="problems",
        target=target,
        evidence={
            "window": "each query's timed runs (summed)",
            "critical": critical,
            "tables": tables,
            "problems": problems,
            "min_table_rows": min_table_rows,
            "min_table_pages": min_table_pages,
            "min_index_pct": min_index_pct,
        },
        reason=judged_reason(said, len(problems), "problems", target, "; ".join(problems)),
    )
    if replaced:
        # Something judged is left: a big table's share, or a critical index's scans.
        comparable = any(t["judged"] for t in tables) or any(
            c["scans_in_window"] is not None for c in critical
        )
        _disturbed(check, replaced, unjudged, comparable=comparable)
    if unrun:
        _not_run(check, unrun)
    return check


def _not_run(check: Check, unrun: list[str]) -> None:
    """Say in ``check`` that the critical indexes of queries that failed (``unrun``) were
    not judged: a query refused (a revoked privilege) said nothing of its index, so no
    fail (exit 1, "a regression") on it; with nothing else wrong, the check could not
    judge (an ``error``). Raises nothing."""
    check.evidence["not_judged"] = [*check.evidence.get("not_judged", []), *unrun]
    check.reason = f"{check.reason}; not judged: {'; '.join(unrun)}"
    if check.status == "pass":
        check.status = "error"


def _disturbed(check: Check, replaced: list[str], unjudged: list[str], *, comparable: bool) -> None:
    """Say in ``check`` that ``replaced`` were replaced during its window and ``unjudged``
    (what that window's counters alone showed) not judged; with no other problem, or
    nothing ``comparable`` left, it becomes an ``error``. Raises nothing."""
    check.evidence["replaced_during_window"] = replaced
    check.evidence["not_judged"] = unjudged
    check.reason = f"{check.reason}; {_names(replaced)} {_DISTURBED}"
    if unjudged:
        check.reason += f"; not judged in that window: {'; '.join(unjudged)}"
    if check.status == "pass" and (unjudged or not comparable):
        check.status = "error"
        check.reason += "; run the check again once the data load is done"
