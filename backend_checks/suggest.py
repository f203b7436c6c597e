"""Index suggestions with proof: for each flagged sequential scan, the index that removes it.

The candidate comes from the scan itself: the columns its filter compares with ``=``
(first, in the filter's order), then the key of the Sort above it (ORDER BY, with its
direction), else a column it compares with ``<``/``>``. ``@>`` on an array or ``@@`` on a
tsvector gives a GIN candidate instead.

Each suggestion is then proven (:mod:`backend_checks.proofs`): planner cost before and after
the index, with HypoPG, a real build in a rolled-back transaction, or a scratch copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from backend_checks.health import IndexStats
from backend_checks.plans import SeqScan
from backend_checks.proofs import (
    PROOF_MIN_GAIN,
    SCRATCH_MAX_ROWS,
    prove,
    prove_any_way,
    prove_on_copy,
)
from backend_checks.proofs import bare as _bare
from backend_checks.proofs import qualified as _qualified
from backend_checks.suite import QueryRun, QuerySpec

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
    invalid_index: str | None = Field(
        None, description="an INVALID index of these columns: rebuild it, not a second one"
    )
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
    existing = list(existing)
    merged = [item for item in _merge(list(found.values())) if not _covered(item, existing)]
    for item in merged:
        prove_any_way(conn, item, by_id, runs, build_allowed=build_allowed)
        _rebuild_instead(item, existing)
    return merged


def _rebuild_instead(item: Suggestion, existing: list[IndexStats]) -> None:
    """Turn ``item`` into the rebuild of an INVALID index that already leads with its
    columns (a failed CREATE INDEX CONCURRENTLY): creating a second one would leave the
    broken one in place, costing every write. Called after the proof, which built or
    imagined the index of the columns: the rebuilt one is that index."""
    broken = next(
        (ix for ix in existing if not ix.valid and _covers(ix, item.table, item.columns,
                                                           item.method, valid=False)),
        None,
    )  # fmt: skip
    if broken is None:
        return
    item.invalid_index = broken.index
    item.because.append(
        f"{broken.index} is INVALID (no query can use it): rebuild it rather than create a "
        f"second index; or DROP INDEX CONCURRENTLY {broken.index} and {item.ddl}"
    )
    item.ddl = f"REINDEX INDEX CONCURRENTLY {broken.index}"


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


def _covers(
    ix: IndexStats, table: str, columns: list[str], method: str, *, valid: bool = True
) -> bool:
    wanted = [_bare(c) for c in columns]
    return (
        ix.table == table
        and ix.method == method
        and ix.valid == valid
        and not ix.partial
        and ix.columns[: len(wanted)] == wanted
    )


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
