"""Table and index counters at both ends of a measuring window, and their differences.

A table or an index is matched across a window by its OID (``relid``, ``indexrelid``), not
by its name: ``backend datagen`` swaps freshly built tables in under the live names
(``ALTER TABLE ... SET SCHEMA public``), so inside one window a name can stand for two
tables, and subtracting the old one's counters from the new one's gave negative reads and
hit ratios outside 0-100 %. What is not the same object at both ends, or whose counters
went back (a reset), is left out of the window's differences and named as replaced, so a
check can say its window was disturbed instead of judging it.

devicelab's own scratch is never counted: the staging schema of a datagen (running, or
left behind by a killed one) and temporary tables (the serial datagen's ``_dl_`` helpers,
other sessions' scratch, which live in local buffers, not shared_buffers).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from backend_checks.datagen import STAGE_SCHEMA

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "OWN_SCRATCH",
    "SYSTEM_SCHEMAS",
    "IndexStats",
    "TableStats",
    "Window",
    "compare",
    "index_scans",
    "index_snapshot",
    "snapshot",
]

#: The schemas of PostgreSQL itself, a SQL list: no health check counts their tables.
SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"
#: The SQL condition, on ``pg_namespace n`` and ``pg_class c`` (a table or an index), that
#: it is devicelab's scratch or a temporary table: no health check counts it.
OWN_SCRATCH = f"(n.nspname = '{STAGE_SCHEMA}' OR c.relpersistence = 't')"
_COUNTERS = ("seq_scan", "seq_tup_read", "idx_scan", "heap_hit", "heap_read", "idx_hit",
             "idx_read")  # fmt: skip


class TableStats(BaseModel):
    """Counters of one table (pg_stat_user_tables + pg_statio_user_tables)."""

    table: str
    relid: int = Field(0, description="the table's OID (0: unknown, matched by name)")
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
    replaced: int = Field(
        0, description="summed windows (Window.total) in which it was replaced: not counted"
    )


class IndexStats(BaseModel):
    """Counters and leading columns of one index (pg_stat_user_indexes, pg_index)."""

    table: str
    index: str
    indexrelid: int = Field(0, description="the index's OID (0: unknown, matched by name)")
    columns: list[str]
    idx_scan: int
    method: str = Field("btree", description="access method: btree, gin, ...")
    partial: bool = Field(False, description="a WHERE clause limits the rows it holds")
    valid: bool = Field(True, description="usable (a failed CREATE INDEX CONCURRENTLY is not)")
    replaced: int = Field(
        0, description="summed windows (Window.total) in which it was replaced: not counted"
    )


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
    """The counters of every user table now (devicelab's scratch left out), keyed by
    ``schema.table``. Raises psycopg.Error."""
    _flush(conn)
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        rows = conn.execute(
            f"""SELECT t.schemaname || '.' || t.relname, greatest(c.reltuples, 0),
                       coalesce(t.seq_scan, 0), coalesce(t.seq_tup_read, 0),
                       coalesce(t.idx_scan, 0),
                       coalesce(io.heap_blks_hit, 0), coalesce(io.heap_blks_read, 0),
                       coalesce(io.idx_blks_hit, 0), coalesce(io.idx_blks_read, 0),
                       coalesce(t.n_dead_tup, 0), c.relpages, t.relid
                FROM pg_stat_user_tables t
                JOIN pg_class c ON c.oid = t.relid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                JOIN pg_statio_user_tables io ON io.relid = t.relid
                WHERE t.schemaname NOT IN {SYSTEM_SCHEMAS} AND NOT {OWN_SCRATCH}"""
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
            relid=r[11],
        )
        for r in rows
    }


def index_snapshot(conn: psycopg.Connection[Any]) -> dict[str, IndexStats]:
    """The scan counters of every user index now (devicelab's scratch left out), keyed by
    ``schema.index`` (call right after :func:`snapshot`, which flushes the statistics).
    Raises psycopg.Error."""
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
                       am.amname, i.indpred IS NOT NULL, i.indisvalid, s.indexrelid
                FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
                JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE s.schemaname NOT IN {SYSTEM_SCHEMAS} AND NOT {OWN_SCRATCH}"""
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
            indexrelid=r[7],
        )
        for r in rows
    }


def _oid(stats: TableStats | IndexStats) -> int:
    return stats.relid if isinstance(stats, TableStats) else stats.indexrelid


def _pairs[S: (TableStats, IndexStats)](
    before: Mapping[str, S], after: Mapping[str, S], counters: Iterable[str]
) -> tuple[list[tuple[str, S, S]], list[str]]:
    """((name at the end, counters at the start, at the end) of each object that is the
    same at both ends, names of the others that were there at both ends: another object
    under the name, its counters reset, or replaced in a summed window). An object only
    there at one end (created or dropped) is in neither: nothing of it to compare."""
    by_oid = {_oid(s): s for s in before.values() if _oid(s)}
    same, replaced = [], []
    for name, now in after.items():
        then = by_oid.get(_oid(now)) if _oid(now) else before.get(name)
        if then is None:
            if name in before:
                replaced.append(name)
            continue
        if any(getattr(now, c) < getattr(then, c) for c in counters):
            replaced.append(name)
            continue
        same.append((name, then, now))
        if now.replaced:
            replaced.append(name)
    return same, sorted(replaced)


def compare(
    before: Mapping[str, TableStats], after: Mapping[str, TableStats]
) -> tuple[dict[str, TableStats], list[str]]:
    """(each table's counters over the window, keyed by its name at the end, the others'
    counters as at the end; names of the tables replaced during it, not counted). Every
    difference is >= 0. Raises nothing."""
    same, replaced = _pairs(before, after, _COUNTERS)
    deltas = {
        name: now.model_copy(update={c: getattr(now, c) - getattr(then, c) for c in _COUNTERS})
        for name, then, now in same
    }
    return deltas, replaced


def index_scans(
    before: Mapping[str, IndexStats], after: Mapping[str, IndexStats]
) -> tuple[dict[str, int], list[str]]:
    """(scans over the window of each index that is the same at both ends, by its name at
    the end; names of the indexes replaced during it, not counted). Raises nothing."""
    same, replaced = _pairs(before, after, ("idx_scan",))
    return {name: now.idx_scan - then.idx_scan for name, then, now in same}, replaced


class Window(BaseModel):
    """Table and index counters at the start and the end of a measuring window."""

    before: dict[str, TableStats]
    before_idx: dict[str, IndexStats]
    after: dict[str, TableStats] = {}
    after_idx: dict[str, IndexStats] = {}

    @classmethod
    def open(cls, conn: psycopg.Connection[Any]) -> Window:
        """A window starting now. Raises psycopg.Error."""
        return cls(before=snapshot(conn), before_idx=index_snapshot(conn))

    def close(self, conn: psycopg.Connection[Any]) -> Window:
        """This window, ended now. Raises psycopg.Error."""
        return self.model_copy(update={"after": snapshot(conn), "after_idx": index_snapshot(conn)})

    @staticmethod
    def total(
        windows: list[Window],
    ) -> tuple[
        dict[str, TableStats], dict[str, TableStats], dict[str, IndexStats], dict[str, IndexStats]
    ]:
        """(before, after, before_idx, after_idx) whose differences are the sums of the
        windows' differences: zero counters before, summed deltas after, one OID per name
        (a table replaced between two windows counts in both). An object replaced inside a
        window adds nothing for it and counts it in ``replaced``. Raises nothing."""
        before: dict[str, TableStats] = {}
        after: dict[str, TableStats] = {}
        before_idx: dict[str, IndexStats] = {}
        after_idx: dict[str, IndexStats] = {}
        for window in windows:
            # Every object at the window's end is in the sums (a table's size, an index's
            # columns are still facts), with nothing added where it was not comparable.
            deltas, replaced = compare(window.before, window.after)
            for name, now in window.after.items():
                zero = now.model_copy(update=dict.fromkeys(_COUNTERS, 0) | {"replaced": 0})
                delta = deltas.get(name, zero)
                start = before.setdefault(name, zero)
                base = after.get(name, zero)
                sums = {c: getattr(base, c) + getattr(delta, c) for c in _COUNTERS}
                sums["replaced"] = base.replaced + (name in replaced)
                after[name] = now.model_copy(update=sums | {"relid": start.relid})
            scans, replaced = index_scans(window.before_idx, window.after_idx)
            for name, ix in window.after_idx.items():
                zero_ix = ix.model_copy(update={"idx_scan": 0, "replaced": 0})
                start_ix = before_idx.setdefault(name, zero_ix)
                base_ix = after_idx.get(name, zero_ix)
                after_idx[name] = ix.model_copy(
                    update={
                        "idx_scan": base_ix.idx_scan + scans.get(name, 0),
                        "replaced": base_ix.replaced + (name in replaced),
                        "indexrelid": start_ix.indexrelid,
                    }
                )
        return before, after, before_idx, after_idx
