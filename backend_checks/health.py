"""Health checks from the statistics views: each returns a Check with a verdict and evidence.

Judged over the check's own window where that is fair: :func:`snapshot` is taken after the
warm-up runs and again after the timed runs, and the buffer hit ratio and the index share
of scans are computed from the difference (a freshly loaded or restarted server is not
judged on its cold start, and other traffic since the last reset does not hide ours).

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

import time
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from backend_checks.reasons import holds, judged_reason
from backend_checks.unused import invalid_fix, stats_window_start, unused_indexes
from devicelab.models import Check
from devicelab.targets import backend_target

if TYPE_CHECKING:
    import psycopg

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

_SYSTEM = "('pg_catalog', 'information_schema', 'pg_toast')"


class TableStats(BaseModel):
    """Counters of one table (pg_stat_user_tables + pg_statio_user_tables)."""

    table: str
    rows: float
    pages: float = 0
    seq_scan: int
    seq_tup_read: int
    idx_scan: int
    heap_hit: int
    heap_read: int
    idx_hit: int
    idx_read: int
    dead: int


def _flush(conn: psycopg.Connection[Any]) -> None:
    """Make this backend's pending statistics visible (PostgreSQL 15+), else wait them out."""
    import psycopg

    try:
        with conn.transaction():
            conn.execute("SELECT pg_stat_force_next_flush()")
    except psycopg.Error:
        time.sleep(1.1)
    with conn.transaction():
        conn.execute("SELECT pg_stat_clear_snapshot()")


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, TableStats]:
    """The counters of every user table now, keyed by ``schema.table``."""
    _flush(conn)
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        rows = conn.execute(
            f"""SELECT t.schemaname || '.' || t.relname, greatest(c.reltuples, 0),
                       coalesce(t.seq_scan, 0), coalesce(t.seq_tup_read, 0),
                       coalesce(t.idx_scan, 0),
                       coalesce(io.heap_blks_hit, 0), coalesce(io.heap_blks_read, 0),
                       coalesce(io.idx_blks_hit, 0), coalesce(io.idx_blks_read, 0),
                       coalesce(t.n_dead_tup, 0), c.relpages
                FROM pg_stat_user_tables t
                JOIN pg_class c ON c.oid = t.relid
                JOIN pg_statio_user_tables io ON io.relid = t.relid
                WHERE t.schemaname NOT IN {_SYSTEM}"""
        ).fetchall()
    return {
        r[0]: TableStats(
            table=r[0],
            rows=float(r[1]),
            seq_scan=r[2],
            seq_tup_read=r[3],
            idx_scan=r[4],
            heap_hit=r[5],
            heap_read=r[6],
            idx_hit=r[7],
            idx_read=r[8],
            dead=r[9],
            pages=r[10],
        )
        for r in rows
    }


def _delta(before: dict[str, TableStats], after: dict[str, TableStats]) -> dict[str, TableStats]:
    out = {}
    for name, now in after.items():
        then = before.get(name)
        if then is None:
            out[name] = now
            continue
        fields = (
            "seq_scan",
            "seq_tup_read",
            "idx_scan",
            "heap_hit",
            "heap_read",
            "idx_hit",
            "idx_read",
        )
        values = {f: getattr(now, f) - getattr(then, f) for f in fields}
        out[name] = now.model_copy(update=values)
    return out


class Window(BaseModel):
    """Table and index counters at the start and the end of a measuring window."""

    before: dict[str, TableStats]
    before_idx: dict[str, IndexStats]
    after: dict[str, TableStats] = {}
    after_idx: dict[str, IndexStats] = {}

    @classmethod
    def open(cls, conn: psycopg.Connection[Any]) -> Window:
        """A window starting now."""
        return cls(before=snapshot(conn), before_idx=index_snapshot(conn))

    def close(self, conn: psycopg.Connection[Any]) -> Window:
        """This window, ended now."""
        return self.model_copy(update={"after": snapshot(conn), "after_idx": index_snapshot(conn)})

    @staticmethod
    def total(
        windows: list[Window],
    ) -> tuple[
        dict[str, TableStats], dict[str, TableStats], dict[str, IndexStats], dict[str, IndexStats]
    ]:
        """(before, after, before_idx, after_idx) whose differences are the sums of the
        windows' differences: zero counters before, summed deltas after."""
        counters = ("seq_scan", "seq_tup_read", "idx_scan", "heap_hit", "heap_read", "idx_hit",
                    "idx_read")  # fmt: skip
        before: dict[str, TableStats] = {}
        after: dict[str, TableStats] = {}
        before_idx: dict[str, IndexStats] = {}
        after_idx: dict[str, IndexStats] = {}
        for window in windows:
            for name, delta in _delta(window.before, window.after).items():
                zero = delta.model_copy(update=dict.fromkeys(counters, 0))
                before.setdefault(name, zero)
                base = after.get(name, zero)
                after[name] = delta.model_copy(
                    update={c: getattr(base, c) + getattr(delta, c) for c in counters}
                )
            for name, ix in window.after_idx.items():
                then = window.before_idx.get(name)
                scans = ix.idx_scan - (then.idx_scan if then else 0)
                before_idx.setdefault(name, ix.model_copy(update={"idx_scan": 0}))
                total = after_idx[name].idx_scan if name in after_idx else 0
                after_idx[name] = ix.model_copy(update={"idx_scan": total + scans})
        return before, after, before_idx, after_idx


def buffer_hit_ratio(before: dict[str, TableStats], after: dict[str, TableStats]) -> Check:
    """Cache hit ratio of tables and of indexes over the timed runs (REFERENCE.md formula:
    hit / (hit + read) from pg_statio_user_tables / _indexes), judged against the
    buffer_hit_ratio row of targets.yaml (> 95 %)."""
    delta = _delta(before, after)
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
    evidence = {
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
    if not ratios:
        return Check(
            id="buffer_hit_ratio",
            title="Buffer cache hit ratio",
            category="health",
            status="skip",
            unit="%",
            target=target,
            evidence=evidence,
            reason="no table or index blocks were read in the window",
        )
    value = round(min(ratios), 3)
    ok = holds(value, target)
    said = "hit ratio {value} (the lower of tables' and indexes')"
    why = "" if ok else ("the working set does not fit in shared_buffers, or a query reads "
                         "far more than it returns")  # fmt: skip
    return Check(
        id="buffer_hit_ratio",
        title="Buffer cache hit ratio (tables and indexes)",
        category="health",
        status="pass" if ok else "fail",
        value=value,
        unit="%",
        target=target,
        evidence=evidence,
        reason=judged_reason(said, value, "%", target, why),
    )


class IndexStats(BaseModel):
    """Counters and leading columns of one index (pg_stat_user_indexes, pg_index)."""

    table: str
    index: str
    columns: list[str]
    idx_scan: int
    method: str = Field("btree", description="access method: btree, gin, ...")
    partial: bool = Field(False, description="a WHERE clause limits the rows it holds")
    valid: bool = Field(True, description="usable (a failed CREATE INDEX CONCURRENTLY is not)")


def index_snapshot(conn: psycopg.Connection[Any]) -> dict[str, IndexStats]:
    """The scan counters of every user index now, keyed by ``schema.index`` (call right
    after :func:`snapshot`, which flushes the statistics)."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        rows = conn.execute(
            f"""SELECT s.schemaname || '.' || s.relname, s.schemaname || '.' || s.indexrelname,
                       coalesce(s.idx_scan, 0),
                       ARRAY(SELECT coalesce(a.attname::text, '(expression)')
                             FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                             LEFT JOIN pg_attribute a
                               ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                             ORDER BY k.n),
                       am.amname, i.indpred IS NOT NULL, i.indisvalid
                FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
                JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
                WHERE s.schemaname NOT IN {_SYSTEM}"""
        ).fetchall()
    return {
        r[1]: IndexStats(
            table=r[0],
            index=r[1],
            idx_scan=r[2],
            columns=list(r[3]),
            method=r[4],
            partial=r[5],
            valid=r[6],
        )
        for r in rows
    }


def indexes_for(need: Any, indexes: Iterable[IndexStats]) -> list[IndexStats]:
    """The indexes that serve a query file's ``indexes:`` entry: same table, same leading
    columns (any name, any direction)."""
    wanted = [c.split()[0] for c in need.columns]
    return [ix for ix in indexes if ix.table == need.table and ix.columns[: len(wanted)] == wanted]


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
    ``failed`` (query id -> its error) is not called unscanned: the query never ran, and
    the problem names its error instead."""
    served, failed = served or {}, failed or {}
    problems: list[str] = []
    critical = []
    for spec in specs:
        for need in spec.indexes:
            found = indexes_for(need, after_idx.values())
            # An INVALID index (a failed CREATE INDEX CONCURRENTLY) matches by its columns
            # but no plan can use it: it is named with its fix, never called "not scanned".
            matches = [ix for ix in found if ix.valid]
            broken = [ix.index for ix in found if not ix.valid]
            scans = sum(
                ix.idx_scan - (before_idx[ix.index].idx_scan if ix.index in before_idx else 0)
                for ix in matches
            )
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
            elif scans == 0 and big and spec.id in failed:
                critical[-1]["query_failed"] = failed[spec.id]
                names = ", ".join(ix.index for ix in matches)
                problems.append(f"{spec.id}: its query failed ({failed[spec.id]}), so "
                                f"{names} was not judged")  # fmt: skip
            elif scans == 0 and big and (spec.id, need.table) in served:
                critical[-1]["served_by"] = served[(spec.id, need.table)]
            elif scans == 0 and big:  # a small table is rightly read whole
                problems.append(f"{spec.id}: {', '.join(ix.index for ix in matches)} not scanned")
    delta = _delta(before, after)
    tables = []
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
                f"read {t.seq_tup_read} rows)"
            )
    problems = list(dict.fromkeys(problems))
    target = backend_target("index_usage")
    said = (f"{{value}} (critical indexes missing or unscanned, tables >= {min_table_rows:,} "
            f"rows scanned through an index < {min_index_pct:g} % of the time)")  # fmt: skip
    return Check(
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
