"""Compose the SQL of REST requests from parsed parts, the catalog and bound values.

Rules that make injection impossible by construction: identifiers come from the request
only after the catalog confirmed them and are quoted with ``sql.Identifier``; operators and
casts come from fixed tables here; SQL type names come from pg_catalog (``format_type``);
every value is a placeholder with its value in the params list. Each builder returns
``(Composed, params)``.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import sql

from backend_checks.reference import embed
from backend_checks.reference.catalog import Catalog, Function, Relation
from backend_checks.reference.errors import rest_error
from backend_checks.reference.parse import Condition, Logic, OrderTerm, SelectItem

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

#: A statement psycopg can execute.
Query = sql.SQL | sql.Composed
Built = tuple[Query, list[Any]]

#: Binary operators: PostgREST name -> SQL operator (fixed text, never from the request).
_BINARY = {
    "eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
    "like": "LIKE", "ilike": "ILIKE", "match": "~", "imatch": "~*",
    "cs": "@>", "cd": "<@", "ov": "&&", "sl": "<<", "sr": ">>", "nxl": "&<", "nxr": "&>",
    "adj": "-|-", "isdistinct": "IS DISTINCT FROM",
}  # fmt: skip
_FTS = {
    "fts": "to_tsquery",
    "plfts": "plainto_tsquery",
    "phfts": "phraseto_tsquery",
    "wfts": "websearch_to_tsquery",
}
_IS = {
    "null": "IS NULL",
    "not_null": "IS NOT NULL",
    "true": "IS TRUE",
    "false": "IS FALSE",
    "unknown": "IS UNKNOWN",
}
#: Casts allowed in ``select=col::type`` (PostgREST allows any; we keep a safe list).
_CASTS = {
    "text", "int", "int4", "int8", "integer", "bigint", "smallint", "numeric", "float8",
    "float4", "real", "boolean", "bool", "json", "jsonb", "uuid", "date", "timestamptz",
    "timestamp", "time", "interval", "varchar",
}  # fmt: skip


def column_check(rel: Relation, name: str, where: str) -> sql.Identifier:
    """The quoted identifier of column ``name`` of ``rel`` .

    Raises ApiError 400 (42703) when the catalog does not know the column.
    """
    if rel.column(name) is None:
        raise rest_error(
            400,
            "42703",
            f"column {rel.name}.{name} does not exist",
            details=f"in {where}",
        )
    return sql.Identifier(name)


def _embed(
    rel: Relation, item: SelectItem, catalog: Catalog, outer: str, depth: int
) -> sql.Composable:
    """A correlated subquery giving the embedded object (or array) of ``item``.

    Raises ApiError as :func:`embed.find_relationship` does, and for bad names inside.
    """
    relationship, target = embed.find_relationship(catalog, rel, item)
    here = f"_t{depth}"
    inner = _select_list(target, list(item.embed or ()), catalog, here, depth + 1)
    source, join = embed.join_source(relationship, target, here, outer)
    rows = sql.SQL("SELECT {} FROM {} AS {} WHERE {}").format(
        inner, source, sql.Identifier(here), join
    )
    alias = sql.Identifier(f"_e{depth}")
    if relationship.to_one:
        return sql.SQL("(SELECT row_to_json({a}) FROM ({rows} LIMIT 1) {a})").format(
            a=alias, rows=rows
        )
    return sql.SQL("(SELECT coalesce(json_agg({a}), '[]'::json) FROM ({rows}) {a})").format(
        a=alias, rows=rows
    )


_JSON_STEP = re.compile(r"(->>|->)")
_MAX_JSON_STEPS = 10


def column_ref(rel: Relation, name: str, where: str, params: list[Any]) -> sql.Composable:
    """``name`` as SQL: a catalog column, or a JSON path on one (``data->a->>b``).

    Path keys are bound parameters (cast to text, or to int for array indexes) appended
    to ``params``. Raises ApiError 400 on unknown columns or malformed paths.
    """
    parts = _JSON_STEP.split(name)
    expr: sql.Composable = column_check(rel, parts[0], where)
    steps = list(zip(parts[1::2], parts[2::2], strict=True))
    if len(steps) > _MAX_JSON_STEPS or any(not key for _, key in steps):
        raise rest_error(400, "PGRST100", "failed to parse JSON path", details=name[:80])
    for arrow, key in steps:
        is_index = key.lstrip("-").isdigit() and len(key) < 10
        params.append(int(key) if is_index else key)
        cast = "int" if is_index else "text"
        expr = sql.SQL("({} {} %s::{})").format(expr, sql.SQL(arrow), sql.SQL(cast))
    return expr


def _select_list(
    rel: Relation,
    items: list[SelectItem],
    catalog: Catalog | None = None,
    outer: str = "_s",
    depth: int = 1,
) -> Query:
    """The projection of ``items`` over rows of ``rel`` aliased ``outer``."""
    parts: list[sql.Composable] = []
    for item in items:
        if item.embed is not None:
            if catalog is None:
                raise rest_error(400, "PGRST100", "embedding is not available here")
            expr_e = _embed(rel, item, catalog, outer, depth)
            parts.append(
                sql.SQL("{} AS {}").format(expr_e, sql.Identifier(item.alias or item.name))
            )
            continue
        if item.name == "*":
            parts.append(sql.SQL("*"))
            continue
        expr: sql.Composable = column_check(rel, item.name, "select")
        if item.cast is not None:
            if item.cast.lower() not in _CASTS:
                raise rest_error(400, "PGRST100", f"cast to {item.cast!r} is not supported")
            expr = sql.SQL("{}::{}").format(expr, sql.SQL(item.cast.lower()))
        alias = item.alias or item.name
        parts.append(sql.SQL("{} AS {}").format(expr, sql.Identifier(alias)))
    return sql.SQL(", ").join(parts)


def _condition(rel: Relation, cond: Condition, params: list[Any]) -> Query:
    col = column_ref(rel, cond.column, "filter", params)
    expr: sql.Composable
    if cond.op == "is":
        value = cond.value if isinstance(cond.value, str) else ""
        if value.lower() not in _IS:
            raise rest_error(400, "PGRST100", "is. takes null, not_null, true, false or unknown")
        expr = sql.SQL("{} {}").format(col, sql.SQL(_IS[value.lower()]))
    elif cond.op == "in":
        values = cond.value if isinstance(cond.value, list) else [cond.value]
        if not values:
            expr = sql.SQL("false")
        else:
            params.extend(values)
            marks = sql.SQL(", ").join(sql.Placeholder() * len(values))
            expr = sql.SQL("{} IN ({})").format(col, marks)
    elif cond.op in _FTS:
        func = sql.SQL(_FTS[cond.op])
        if cond.language:
            params.extend([cond.language, cond.value])
            expr = sql.SQL("{} @@ {}(%s::regconfig, %s)").format(col, func)
        else:
            params.append(cond.value)
            expr = sql.SQL("{} @@ {}(%s)").format(col, func)
    else:
        value = cond.value if isinstance(cond.value, str) else ",".join(cond.value)
        if cond.op in ("like", "ilike"):
            value = value.replace("*", "%")
        params.append(value)
        expr = sql.SQL("{} {} %s").format(col, sql.SQL(_BINARY[cond.op]))
    if cond.negated:
        expr = sql.SQL("NOT ({})").format(expr)
    return expr


def _logic(rel: Relation, node: Condition | Logic, params: list[Any]) -> Query:
    if isinstance(node, Condition):
        return _condition(rel, node, params)
    joiner = sql.SQL(" AND ") if node.op == "and" else sql.SQL(" OR ")
    inner = [_logic(rel, child, params) for child in node.children]
    expr: Query = sql.SQL("({})").format(joiner.join(inner)) if inner else sql.SQL("true")
    if node.negated:
        expr = sql.SQL("NOT {}").format(expr)
    return expr


def where_sql(rel: Relation, filters: list[Condition | Logic]) -> Built:
    """``WHERE ...`` for ``filters`` (empty when none); raises ApiError 400 on bad names."""
    params: list[Any] = []
    if not filters:
        return sql.SQL(""), params
    parts = [_logic(rel, f, params) for f in filters]
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params


def _order_sql(rel: Relation, order: list[OrderTerm], params: list[Any]) -> Query:
    if not order:
        return sql.SQL("")
    terms = []
    for term in order:
        col = column_ref(rel, term.column, "order", params)
        text = " DESC" if term.descending else " ASC"
        if term.nulls:
            text += f" NULLS {term.nulls.upper()}"
        terms.append(col + sql.SQL(text))
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)


def _page_sql(limit: int | None, offset: int | None, params: list[Any]) -> Query:
    out: Query = sql.SQL("")
    if limit is not None:
        params.append(limit)
        out += sql.SQL(" LIMIT %s")
    if offset:
        params.append(offset)
        out += sql.SQL(" OFFSET %s")
    return out


def _qualified(rel: Relation) -> sql.Identifier:
    return sql.Identifier(rel.schema, rel.name)


def _wrap(inner: sql.Composable, select: sql.Composable) -> Query:
    """Rows of ``inner`` projected by ``select``, as (json array text, first row json, n)."""
    return sql.SQL(
        "SELECT coalesce(json_agg(_r), '[]')::text, (json_agg(_r) -> 0)::text, count(*) "
        "FROM (SELECT {} FROM ({}) _s) _r"
    ).format(select, inner)


def read_sql(
    rel: Relation,
    items: list[SelectItem],
    filters: list[Condition | Logic],
    order: list[OrderTerm],
    limit: int | None,
    offset: int | None,
    catalog: Catalog | None = None,
) -> Built:
    """The read of ``rel``: returns (json array, first row, row count)."""
    select = _select_list(rel, items, catalog)
    where, params = where_sql(rel, filters)
    order_part = _order_sql(rel, order, params)
    page = _page_sql(limit, offset, params)
    inner = sql.SQL("SELECT * FROM {}{}{}{}").format(_qualified(rel), where, order_part, page)
    return _wrap(inner, select), params


def count_sql(rel: Relation, filters: list[Condition | Logic]) -> Built:
    """``count(*)`` of ``rel`` under ``filters``, ignoring order and paging."""
    where, params = where_sql(rel, filters)
    return sql.SQL("SELECT count(*) FROM {}{}").format(_qualified(rel), where), params


def _returning(
    items: list[SelectItem], rel: Relation, cte: sql.Composable, catalog: Catalog | None
) -> Query:
    return sql.SQL(
        "{} SELECT coalesce(json_agg(_r), '[]')::text, (json_agg(_r) -> 0)::text, count(*) "
        "FROM (SELECT {} FROM _w AS _s) _r"
    ).format(cte, _select_list(rel, items, catalog))


def insert_sql(
    rel: Relation,
    columns: list[str],
    rows_json: str,
    items: list[SelectItem],
    on_conflict: list[str] | None,
    resolution: str | None,
    catalog: Catalog | None = None,
) -> Built:
    """INSERT of the JSON array ``rows_json`` into ``columns`` of ``rel``, with RETURNING.

    The rows are decoded by json_populate_recordset, so PostgreSQL does every type
    conversion and the whole body is one bound parameter.
    """
    target = _qualified(rel)
    if not columns:
        insert = sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target)
        params: list[Any] = []
    else:
        cols = sql.SQL(", ").join(column_check(rel, c, "insert") for c in columns)
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
    return _returning(items, rel, cte, catalog), params


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
    update = sql.SQL(
        "UPDATE {t} SET ({cols}) = (SELECT {cols} FROM json_populate_record(NULL::{t}, %s)){w}"
    ).format(t=target, cols=cols, w=where)
    if len(columns) == 1:
        # A one-column list needs the ROW-less form: SET (a) = (SELECT a ...) is fine in
        # PostgreSQL >= 10, but keep the plain form for clarity of plans and errors.
        update = sql.SQL(
            "UPDATE {t} SET {c} = (SELECT {c} FROM json_populate_record(NULL::{t}, %s)){w}"
        ).format(t=target, c=cols, w=where)
    cte = sql.SQL("WITH _w AS ({} RETURNING *)").format(update)
    return _returning(items, rel, cte, catalog), params


def delete_sql(
    rel: Relation,
    items: list[SelectItem],
    filters: list[Condition | Logic],
    catalog: Catalog | None = None,
) -> Built:
    """DELETE from ``rel`` where ``filters``, with RETURNING.

    Returns (statement, params). Raises ApiError 400: no filter (21000, as
    pg-safeupdate), unknown names (42703).
    """
    _require_filter("DELETE", filters)
    where, params = where_sql(rel, filters)
    cte = sql.SQL("WITH _w AS (DELETE FROM {}{} RETURNING *)").format(_qualified(rel), where)
    return _returning(items, rel, cte, catalog), params


def rpc_sql(
    fn: Function,
    args_json: str,
    given: list[str],
    items: list[SelectItem],
    filters: list[Condition | Logic],
    order: list[OrderTerm],
    limit: int | None,
    offset: int | None,
) -> tuple[Query, list[Any], Query, list[Any]]:
    """The call of ``fn`` with named arguments ``given`` decoded from ``args_json``.

    Returns (call SQL, params, count SQL, count params). The call answers
    (json array, first row or the scalar, row count); argument values are decoded by
    json_to_record with the types pg_catalog gives, so they are one bound parameter.
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
        return body, base_params, sql.SQL("SELECT 1"), []
    result = fn.result_relation()
    rows = sql.SQL("SELECT _f.* FROM {}LATERAL {} AS _f").format(source, call)
    where, where_params = where_sql(result, filters)
    params = base_params + where_params
    order_part = _order_sql(result, order, params)
    page = _page_sql(limit, offset, params)
    inner = sql.SQL("SELECT * FROM ({}) _t{}{}{}").format(rows, where, order_part, page)
    count = sql.SQL("SELECT count(*) FROM ({}) _t{}").format(rows, where)
    return _wrap(inner, _select_list(result, items)), params, count, base_params + where_params
