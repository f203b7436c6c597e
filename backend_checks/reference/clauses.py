"""The SQL of columns, JSON paths, filters, order and paging, from parsed parts and the
catalog, for ``query.py`` and ``readplan.py``.

Identifiers come from the request only after the catalog confirmed them and are quoted
with ``sql.Identifier``; operators and casts come from fixed tables here; every value
(JSON path keys included) is a placeholder whose value is appended to ``params``, in the
order the placeholders appear in the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from psycopg import sql

from backend_checks.reference.catalog import Relation
from backend_checks.reference.errors import rest_error
from backend_checks.reference.parse import Condition, Logic, OrderTerm

__all__ = [
    "CASTS",
    "ROWS",
    "EmbedTest",
    "Query",
    "RelatedOrder",
    "column_check",
    "column_ref",
    "json_alias",
    "logic_sql",
    "order_sql",
    "page_sql",
    "where_sql",
]

#: A statement psycopg can execute.
Query = sql.SQL | sql.Composed

#: ``is.null`` on a name: the EXISTS test of the embed so named (its values appended to
#: the list), or None when no embed has that name (then it is a column).
EmbedTest = Callable[[str, list[Any]], sql.Composable | None]
#: ``order=rel(col)``: the value of ``col`` of the to-one embed ``rel`` (values appended).
RelatedOrder = Callable[[OrderTerm, list[Any]], sql.Composable]

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
CASTS = {
    "text", "int", "int4", "int8", "integer", "bigint", "smallint", "numeric", "float8",
    "float4", "real", "boolean", "bool", "json", "jsonb", "uuid", "date", "timestamptz",
    "timestamp", "time", "interval", "varchar",
}  # fmt: skip

#: The alias of the rows of a statement's top level (``FROM t AS _s``, ``UPDATE t AS _s``):
#: a computed field without a ``table`` is called on it.
ROWS = "_s"

_JSON_STEP = re.compile(r"(->>|->)")
_JSON_INDEX = re.compile(r"-?[0-9]{1,9}")
_MAX_JSON_STEPS = 10


def column_check(rel: Relation, name: str, where: str) -> sql.Identifier:
    """The quoted identifier of column ``name`` of ``rel``.

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


def _json_steps(name: str) -> tuple[str, list[tuple[str, str]]]:
    """``data->a->>b`` -> ("data", [("->", "a"), ("->>", "b")]); raises ApiError 400."""
    parts = _JSON_STEP.split(name)
    steps = list(zip(parts[1::2], parts[2::2], strict=True))
    if len(steps) > _MAX_JSON_STEPS or any(not key for _, key in steps):
        raise rest_error(400, "PGRST100", "failed to parse JSON path", details=name[:80])
    return parts[0], steps


def column_ref(
    rel: Relation, name: str, where: str, params: list[Any], table: str | None = None
) -> sql.Composable:
    """``name`` as SQL: a catalog column or computed field, or a JSON path on one
    (``data->a->>b``), qualified with the alias ``table`` when given. A computed field
    is called on the row aliased ``table``, else on ``ROWS`` (every statement of this
    package names its rows so).

    As PostgREST 12, a path on a column that is not json or jsonb reads
    ``to_jsonb(col)``. Path keys are bound parameters (cast to text, or to int for array
    indexes) appended to ``params``. Raises ApiError 400 on unknown columns or malformed
    paths.
    """
    column_name, steps = _json_steps(name)
    computed = rel.computed_field(column_name)
    expr: sql.Composable
    if computed is not None:
        # The function of the row: the alias's row cast to the relation's row type (a
        # no-op on a table's alias; the fields of a subquery's or CTE's row otherwise).
        expr = sql.SQL("{}({}::{})").format(
            sql.Identifier(computed.schema, computed.function),
            sql.Identifier(table or ROWS),
            sql.Identifier(rel.schema, rel.name),
        )
        value_type = computed.type
    else:
        ident = column_check(rel, column_name, where)
        expr = sql.Identifier(table, column_name) if table else ident
        column = rel.column(column_name)
        value_type = column.type if column is not None else ""
    if steps and value_type not in ("json", "jsonb"):
        expr = sql.SQL("to_jsonb({})").format(expr)
    for arrow, key in steps:
        is_index = _JSON_INDEX.fullmatch(key) is not None
        params.append(int(key) if is_index else key)
        cast = "int" if is_index else "text"
        expr = sql.SQL("({} {} %s::{})").format(expr, sql.SQL(arrow), sql.SQL(cast))
    return expr


def json_alias(name: str) -> str | None:
    """The output name PostgREST gives a JSON path: its last key (``data->a->>b`` -> b),
    or, when it ends with an index, the last key before it, else the column
    (``data->0`` -> data). None for a plain column. Raises ApiError 400 on bad paths."""
    column, steps = _json_steps(name)
    if not steps:
        return None
    keys = [key for _, key in steps if _JSON_INDEX.fullmatch(key) is None]
    return keys[-1] if keys else column


def _condition(
    rel: Relation,
    cond: Condition,
    params: list[Any],
    table: str | None,
    embed_test: EmbedTest | None,
) -> Query:
    value_text = cond.value if isinstance(cond.value, str) else ""
    if embed_test is not None and cond.op == "is" and value_text.lower() == "null":
        # PostgREST's null filter on an embedded resource: `rel=is.null` keeps the rows
        # without an embedded row, `rel=not.is.null` those with one.
        test = embed_test(cond.column, params)
        if test is not None:
            return sql.SQL("EXISTS {}" if cond.negated else "NOT EXISTS {}").format(test)
    col = column_ref(rel, cond.column, "filter", params, table)
    expr: sql.Composable
    if cond.op == "is":
        if value_text.lower() not in _IS:
            raise rest_error(400, "PGRST100", "is. takes null, not_null, true, false or unknown")
        expr = sql.SQL("{} {}").format(col, sql.SQL(_IS[value_text.lower()]))
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


def logic_sql(
    rel: Relation,
    node: Condition | Logic,
    params: list[Any],
    table: str | None = None,
    embed_test: EmbedTest | None = None,
) -> Query:
    """One filter or ``and``/``or`` tree over rows of ``rel`` (aliased ``table`` if given).

    Raises ApiError 400 on unknown columns and bad values of ``is``.
    """
    if isinstance(node, Condition):
        return _condition(rel, node, params, table, embed_test)
    joiner = sql.SQL(" AND ") if node.op == "and" else sql.SQL(" OR ")
    inner = [logic_sql(rel, child, params, table, embed_test) for child in node.children]
    expr: Query = sql.SQL("({})").format(joiner.join(inner)) if inner else sql.SQL("true")
    if node.negated:
        expr = sql.SQL("NOT {}").format(expr)
    return expr


def where_sql(rel: Relation, filters: list[Condition | Logic]) -> tuple[Query, list[Any]]:
    """``WHERE ...`` for ``filters`` (empty when none); raises ApiError 400 on bad names."""
    params: list[Any] = []
    if not filters:
        return sql.SQL(""), params
    parts = [logic_sql(rel, f, params) for f in filters]
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params


def order_sql(
    rel: Relation,
    order: list[OrderTerm],
    params: list[Any],
    table: str | None = None,
    related: RelatedOrder | None = None,
) -> Query:
    """`` ORDER BY ...`` for ``order`` (empty when none).

    Raises ApiError 400 on unknown columns, and for ``rel(col)`` terms where ``related``
    is None (PGRST100) or refuses them.
    """
    if not order:
        return sql.SQL("")
    terms = []
    for term in order:
        if term.relation is not None:
            if related is None:
                raise rest_error(400, "PGRST100", "failed to parse order", details=term.relation)
            col = related(term, params)
        else:
            col = column_ref(rel, term.column, "order", params, table)
        text = " DESC" if term.descending else " ASC"
        if term.nulls:
            text += f" NULLS {term.nulls.upper()}"
        terms.append(col + sql.SQL(text))
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)


def page_sql(limit: int | None, offset: int | None, params: list[Any]) -> Query:
    """`` LIMIT %s OFFSET %s`` as needed, values appended to ``params``."""
    out: Query = sql.SQL("")
    if limit is not None:
        params.append(limit)
        out += sql.SQL(" LIMIT %s")
    if offset:
        params.append(offset)
        out += sql.SQL(" OFFSET %s")
    return out
