"""Compose the SQL of REST requests from parsed parts, the catalog and bound values.

Rules that make injection impossible by construction: identifiers come from the request
only after the catalog confirmed them and are quoted with ``sql.Identifier``; operators and
casts come from fixed tables here; SQL type names come from pg_catalog (``format_type``);
every value is a placeholder with its value in the params list. Each builder returns
``(Composed, params)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import sql

from backend_checks.reference import readplan
from backend_checks.reference.catalog import Catalog, Function, Relation
from backend_checks.reference.clauses import (
    ROWS,
    Query,
    column_check,
    column_ref,
    order_sql,
    page_sql,
    where_sql,
)
from backend_checks.reference.errors import rest_error
from backend_checks.reference.parse import Condition, Logic, OrderTerm, SelectItem
from backend_checks.reference.readplan import Level, Node

__all__ = [
    "Built",
    "Query",
    "column_check",
    "column_ref",
    "count_sql",
    "delete_sql",
    "insert_sql",
    "read_sql",
    "rpc_sql",
    "update_sql",
    "where_sql",
]

Built = tuple[Query, list[Any]]
#: Filters, order and range of embedded levels, keyed by embed path.
Levels = Mapping[tuple[str, ...], Level]

_AGGREGATE = sql.SQL(
    "SELECT coalesce(json_agg(_r), '[]')::text, (json_agg(_r) -> 0)::text, count(*) FROM "
)
#: The rows as CSV lines, as PostgREST writes them: each row's text form without its
#: parentheses (a record's quoting: a value with a comma, a quote or a space is quoted,
#: NULL is empty). The header comes from the first row's keys (rest.py).
_CSV_AGGREGATE = sql.SQL(
    "SELECT coalesce(string_agg(substring(_r::text, 2, length(_r::text) - 2), chr(10)), ''),"
    " (json_agg(_r) -> 0)::text, count(*) FROM "
)


def _qualified(rel: Relation) -> sql.Identifier:
    return sql.Identifier(rel.schema, rel.name)


def _shaped(tree: Node, rows: sql.Composable, rows_params: list[Any], names: readplan.Aliases,
            *, where: sql.Composable | None = None, where_params: list[Any] | None = None,
            csv: bool = False) -> Built:  # fmt: skip
    """The rows ``rows`` (aliased ``_s``) projected by ``tree``'s select list, as
    (json array text, or CSV lines when ``csv``; first row json; row count). Params
    follow the placeholders."""
    columns, params, joins, join_params = readplan.projection(tree, "_s", names, qualify=False)
    statement = (_CSV_AGGREGATE if csv else _AGGREGATE) + sql.SQL(
        "(SELECT {} FROM {} AS _s{}{}) _r"
    ).format(columns, rows, joins, where if where is not None else sql.SQL(""))
    return statement, params + rows_params + join_params + (where_params or [])


def _root_where(tree: Node, names: readplan.Aliases, *, ranged: bool) -> Built:
    """`` WHERE ...`` of the top level (rows aliased ``_s``): its filters, ``rel=is.null``
    tests and ``!inner`` embeds (empty when none)."""
    parts, params = readplan.where_parts(tree, "_s", names, ranged=ranged, qualify=False)
    if not parts:
        return sql.SQL(""), params
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params


def read_sql(
    rel: Relation,
    items: list[SelectItem],
    filters: list[Condition | Logic],
    order: list[OrderTerm],
    limit: int | None,
    offset: int | None,
    catalog: Catalog | None = None,
    embedded: Levels | None = None,
    *,
    csv: bool = False,
) -> Built:
    """The read of ``rel``: returns (json array, or CSV lines when ``csv``; first row;
    row count).

    ``embedded`` holds the filters, order and range of embedded levels, keyed by embed
    path. Raises ApiError as :func:`readplan.build` does and 400 for unknown columns.
    """
    tree = readplan.build(catalog, rel, items, Level(filters, order, limit, offset),
                          embedded or {})  # fmt: skip
    names = readplan.Aliases()
    where, params = _root_where(tree, names, ranged=True)
    order_part = order_sql(rel, order, params, None, readplan.related_order(tree, "_s", names))
    page = page_sql(limit, offset, params)
    inner = sql.SQL("(SELECT * FROM {} AS _s{}{}{})").format(
        _qualified(rel), where, order_part, page
    )
    return _shaped(tree, inner, params, names, csv=csv)


def count_sql(
    rel: Relation,
    filters: list[Condition | Logic],
    items: list[SelectItem] | None = None,
    catalog: Catalog | None = None,
    embedded: Levels | None = None,
) -> Built:
    """``count(*)`` of ``rel`` under ``filters`` and the ``!inner`` / ``is.null`` tests on
    its embeds, ignoring order and paging (also the embeds', as PostgREST's count)."""
    tree = readplan.build(catalog, rel, items or [], Level(filters), embedded or {})
    where, params = _root_where(tree, readplan.Aliases(), ranged=False)
    return sql.SQL("SELECT count(*) FROM {} AS _s{}").format(_qualified(rel), where), params


def _returning(
    items: list[SelectItem],
    rel: Relation,
    cte: sql.Composable,
    cte_params: list[Any],
    catalog: Catalog | None,
    embedded: Levels | None,
) -> Built:
    """The written rows (CTE ``_w``) as ``select=`` shapes them; ``!inner`` embeds leave
    out the rows without an embedded row, as PostgREST's inner join does."""
    tree = readplan.build(catalog, rel, items, Level(), embedded or {})
    names = readplan.Aliases()
    parts, where_params = readplan.where_parts(tree, "_s", names, ranged=False, qualify=True)
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts) if parts else None
    statement, params = _shaped(tree, sql.SQL("_w"), [], names, where=where,
                                where_params=where_params)  # fmt: skip
    return sql.Composed([cte, sql.SQL(" "), statement]), cte_params + params


def insert_sql(
    rel: Relation,
    columns: list[str],
    rows_json: str,
    items: list[SelectItem],
    on_conflict: list[str] | None,
    resolution: str | None,
    catalog: Catalog | None = None,
    embedded: Levels | None = None,
    *,
    defaults: bool = False,
) -> Built:
    """INSERT of the JSON array ``rows_json`` into ``columns`` of ``rel``, with RETURNING.

    The rows are decoded by json_populate_recordset, so PostgreSQL does every type
    conversion and the whole body is one bound parameter. ``defaults`` (``Prefer:
    missing=default``): a column a row lacks gets the column's default (from the
    catalog, evaluated per row) instead of NULL.
    """
    target = _qualified(rel)
    cols = sql.SQL(", ").join(column_check(rel, c, "insert") for c in columns)
    if not columns:
        insert = sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target)
        params: list[Any] = []
    elif defaults:
        cells = [_value_or_default(rel, name) for name in columns]
        insert = sql.SQL(
            "INSERT INTO {t} ({cols}) SELECT {cells}"
            " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS _e(j, n),"
            " LATERAL jsonb_populate_record(NULL::{t}, _e.j) AS _r ORDER BY _e.n"
        ).format(t=target, cols=cols, cells=sql.SQL(", ").join(cells))
        params = [*columns, rows_json]
    else:
        insert = sql.SQL(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{t}, %s)"
        ).format(t=target, cols=cols)
        params = [rows_json]
    if resolution:
        keys = on_conflict or list(rel.primary_key)
        if not keys:
            raise rest_error(400, "PGRST100", "upsert needs on_conflict or a primary key")
        key_sql = sql.SQL(", ").join(column_check(rel, k, "on_conflict") for k in keys)
        # As PostgREST: merge sets every body column, keys included, so a body of only
        # the keys still returns its row (and the UPDATE policy applies); DO NOTHING is
        # for ignore-duplicates, or a body with no column at all (nothing to set).
        if resolution == "ignore-duplicates" or not columns:
            insert += sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(key_sql)
        else:
            sets = sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in columns
            )
            insert += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(key_sql, sets)
    cte = sql.SQL("WITH _w AS ({} RETURNING *)").format(insert)
    return _returning(items, rel, cte, params, catalog, embedded)


def _value_or_default(rel: Relation, name: str) -> sql.Composable:
    """Column ``name`` of the row ``_r`` when its JSON ``_e.j`` has the key (bound as a
    parameter), else the column's default from the catalog (NULL when it has none)."""
    column = rel.column(name)
    default = sql.SQL(column.default) if column is not None and column.default else None
    return sql.SQL("CASE WHEN _e.j ? %s THEN _r.{} ELSE {} END").format(
        sql.Identifier(name), default or sql.SQL("NULL")
    )


def _require_filter(verb: str, filters: list[Condition | Logic]) -> None:
    """Refuse a write on every row, as Supabase does for API roles.

    Supabase loads pg-safeupdate, which fails an UPDATE or DELETE without a WHERE clause
    (PostgREST writes none when the request has no filter); a filter that matches every
    row (``id=not.is.null``) is a WHERE clause and passes. Raises ApiError 400 (21000).
    """
    if not filters:
        raise rest_error(400, "21000", f"{verb} requires a WHERE clause")


def update_sql(
    rel: Relation,
    columns: list[str],
    row_json: str,
    items: list[SelectItem],
    filters: list[Condition | Logic],
    catalog: Catalog | None = None,
    embedded: Levels | None = None,
) -> Built:
    """UPDATE of ``columns`` of ``rel`` from the JSON object ``row_json`` where ``filters``.

    Returns (statement, params). Raises ApiError 400: no column (PGRST100), no filter
    (21000, as pg-safeupdate), unknown names (42703).
    """
    if not columns:
        raise rest_error(400, "PGRST100", "an update needs at least one column")
    _require_filter("UPDATE", filters)
    target = _qualified(rel)
    cols = sql.SQL(", ").join(column_check(rel, c, "update") for c in columns)
    params: list[Any] = [row_json]
    where, where_params = where_sql(rel, filters)
    params.extend(where_params)
    # Aliased as every statement's rows (clauses.ROWS): a computed field in the filters
    # is called on them.
    update = sql.SQL(
        "UPDATE {t} AS {rows} SET ({cols}) = (SELECT {cols} FROM"
        " json_populate_record(NULL::{t}, %s)){w}"
    ).format(t=target, rows=sql.Identifier(ROWS), cols=cols, w=where)
    if len(columns) == 1:
        # A one-column list needs the ROW-less form: SET (a) = (SELECT a ...) is fine in
        # PostgreSQL >= 10, but keep the plain form for clarity of plans and errors.
        update = sql.SQL(
            "UPDATE {t} AS {rows} SET {c} = (SELECT {c} FROM"
            " json_populate_record(NULL::{t}, %s)){w}"
        ).format(t=target, rows=sql.Identifier(ROWS), c=cols, w=where)
    cte = sql.SQL("WITH _w AS ({} RETURNING *)").format(update)
    return _returning(items, rel, cte, params, catalog, embedded)


def delete_sql(
    rel: Relation,
    items: list[SelectItem],
    filters: list[Condition | Logic],
    catalog: Catalog | None = None,
    embedded: Levels | None = None,
) -> Built:
    """DELETE from ``rel`` where ``filters``, with RETURNING.

    Returns (statement, params). Raises ApiError 400: no filter (21000, as
    pg-safeupdate), unknown names (42703).
    """
    _require_filter("DELETE", filters)
    where, params = where_sql(rel, filters)
    cte = sql.SQL("WITH _w AS (DELETE FROM {} AS {}{} RETURNING *)").format(
        _qualified(rel), sql.Identifier(ROWS), where
    )
    return _returning(items, rel, cte, params, catalog, embedded)


def rpc_sql(
    fn: Function,
    args_json: str,
    given: list[str],
    items: list[SelectItem],
    filters: list[Condition | Logic],
    order: list[OrderTerm],
    limit: int | None,
    offset: int | None,
    embedded: Levels | None = None,
    *,
    catalog: Catalog | None = None,
    count: bool = False,
) -> Built:
    """The call of ``fn`` with named arguments ``given`` decoded from ``args_json``.

    Returns (SQL, params). The SQL answers (json array, first row or the scalar, row
    count) and, when ``count``, a fourth column: the rows the call returned before the
    range (``Prefer: count=exact``), from the same call, so a function that writes runs
    once. Argument values are decoded by json_to_record with the types pg_catalog gives,
    so they are one bound parameter. The rows of a function returning a table's or a
    view's row type embed that relation's relationships (``catalog``), as in PostgREST;
    other rows have none (400 PGRST200). Raises ApiError as :func:`readplan.build`.
    """
    types = dict(fn.args)
    name = sql.Identifier(fn.schema, fn.name)
    if given:
        named = sql.SQL(", ").join(
            sql.SQL("{a} => _a.{a}").format(a=sql.Identifier(g)) for g in given
        )
        defs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(g), sql.SQL(types[g])) for g in given
        )
        source: Query = sql.SQL("json_to_record(%s) AS _a({}), ").format(defs)
        call = sql.SQL("{}({})").format(name, named)
        base_params: list[Any] = [args_json]
    else:
        source = sql.SQL("")
        call = sql.SQL("{}()").format(name)
        base_params = []
    if not fn.returns_rows:
        if fn.returns_set:
            inner = sql.SQL("SELECT _f AS v FROM {}LATERAL {} AS _f").format(source, call)
            body = sql.SQL(
                "SELECT coalesce(json_agg(_r.v), '[]')::text, NULL::text, count(*) FROM ({}) _r"
            ).format(inner)
        else:
            inner = sql.SQL("SELECT {} AS v FROM {}(SELECT 1) _one").format(call, source)
            body = sql.SQL(
                "SELECT to_json(_r.v)::text, to_json(_r.v)::text, 1 FROM ({}) _r"
            ).format(inner)
        return body, base_params
    result = fn.result_relation(catalog)
    tree = readplan.build(catalog, result, items, Level(filters, order, limit, offset),
                          embedded or {})  # fmt: skip
    names = readplan.Aliases()
    call_rows = sql.SQL("SELECT _f.* FROM {}LATERAL {} AS _f").format(source, call)
    # Counted: the call's rows are kept once (a CTE) for the page and for the count.
    rows = sql.SQL("SELECT * FROM _call") if count else call_rows
    where, params = _root_where(tree, names, ranged=True)
    order_part = order_sql(result, order, params, None, readplan.related_order(tree, "_s", names))
    page = page_sql(limit, offset, params)
    inner = sql.SQL("(SELECT * FROM ({}) AS _s{}{}{})").format(rows, where, order_part, page)
    # The select list's parameters (embedded filters) come before the rows' in the text:
    # _shaped orders them; uncounted, the rows hold the call's arguments too.
    statement, statement_params = _shaped(
        tree, inner, params if count else base_params + params, names
    )
    if not count:
        return statement, statement_params
    count_where, count_params = _root_where(tree, readplan.Aliases(), ranged=False)
    counted = sql.SQL(
        "WITH _call AS MATERIALIZED ({}) SELECT _page.*, (SELECT count(*) FROM _call AS _s{})"
        " FROM ({}) _page"
    ).format(call_rows, count_where, statement)
    # Placeholders in the text's order: the call's, the count's, then the page's.
    return counted, base_params + count_params + statement_params
