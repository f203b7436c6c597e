"""Probes for proving an index on a scratch copy of its table (see
:func:`backend_checks.proofs.prove_on_copy`): the copy's column types and size, and the
query each kind of index serves, with a real value of the data to probe with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

__all__ = ["btree_probe", "column_kinds", "gin_probe", "index_keys", "row_estimate", "scalar"]


def column_kinds(
    conn: psycopg.Connection[Any], table: str, names: list[str]
) -> dict[str, tuple[str, str]]:
    """Each of ``names`` that ``table`` has: (its type, its type's category)."""
    found = conn.execute(
        """SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typcategory::text
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
           WHERE a.attrelid = to_regclass(%s) AND a.attname = ANY(%s) AND NOT a.attisdropped
             AND a.attnum > 0""",
        (table, names),
    ).fetchall()
    return {str(name): (str(kind), str(category)) for name, kind, category in found}


def row_estimate(conn: psycopg.Connection[Any], table: str) -> float:
    """The planner's row count of ``table`` (pg_class.reltuples). A table never vacuumed
    nor analyzed has none: its size at 100 bytes a row stands in (0 when absent)."""
    row = conn.execute(
        """SELECT CASE WHEN reltuples >= 0 THEN reltuples
                       ELSE pg_relation_size(oid) / 100.0 END
           FROM pg_class WHERE oid = to_regclass(%s)""",
        (table,),
    )
    found = row.fetchone()
    return float(found[0]) if found else 0.0


def scalar(conn: psycopg.Connection[Any], query: Any, value: object) -> Any:
    """The first column of the first row of ``query`` run with ``value``; None if no row."""
    row = conn.execute(query, (value,)).fetchone()
    return row[0] if row else None


def gin_probe(
    conn: psycopg.Connection[Any], name: str, copy: Any, kind: str
) -> tuple[Any, object, str] | None:
    """The WHERE clause a GIN index on column ``name`` of ``copy`` serves, its parameter
    and how it reads: for a tsvector, a search for the rarest lexeme of 2,000 rows; for an
    array, containment of the first element of the first non-empty row. None when the
    column holds nothing."""
    from psycopg import sql

    col = sql.Identifier(name)
    if kind == "tsvector":
        sample = sql.SQL("SELECT {} FROM {} LIMIT 2000").format(col, copy).as_string(conn)
        row = conn.execute(
            "SELECT quote_literal(word) FROM ts_stat(%s) ORDER BY ndoc, word LIMIT 1", (sample,)
        ).fetchone()
        if row is None:
            return None
        return sql.SQL("WHERE {} @@ %s::tsquery").format(col), row[0], f"{name} @@ {row[0]}"
    found = conn.execute(
        sql.SQL(
            "SELECT ARRAY[{c}[array_lower({c}, 1)]] FROM {t} WHERE cardinality({c}) > 0 LIMIT 1"
        ).format(c=col, t=copy)
    ).fetchone()
    if found is None:
        return None
    where = sql.SQL("WHERE {} @> %s").format(col)
    return where, found[0], f"{name} @> ARRAY[<an element of a real row>]"


def index_keys(columns: list[str]) -> Any:
    """``columns`` (``name`` or ``name DESC``) as the key list of a CREATE INDEX or an
    ORDER BY, identifiers quoted."""
    from psycopg import sql

    return sql.SQL(", ").join(
        sql.Identifier(c.split()[0]) + sql.SQL(" DESC" if c.endswith(" DESC") else "")
        for c in columns
    )


def btree_probe(
    conn: psycopg.Connection[Any], columns: list[str], copy: Any
) -> tuple[Any, object, str] | None:
    """The WHERE/ORDER BY a B-tree on ``columns`` of ``copy`` serves: the leading column
    equal to the first row's value, ordered by the other columns (with their direction),
    ``LIMIT 50`` (a page of them). None when the leading column holds only NULLs."""
    from psycopg import sql

    lead = sql.Identifier(columns[0].split()[0])
    found = conn.execute(
        sql.SQL("SELECT {c} FROM {t} WHERE {c} IS NOT NULL LIMIT 1").format(c=lead, t=copy)
    ).fetchone()
    if found is None:
        return None
    tail = sql.SQL("WHERE {} = %s").format(lead)
    shown = f"{columns[0].split()[0]} = <a real row's value>"
    if rest := columns[1:]:
        tail += sql.SQL(" ORDER BY {} LIMIT 50").format(index_keys(rest))
        shown += f" ORDER BY {', '.join(rest)} LIMIT 50"
    return tail, found[0], shown
