"""The read plan of a request and its SQL: which relation each level of ``select=`` reads
and through which relationship, the filters, order and range each level gets from the
query string, and the subqueries that read the embedded levels.

This is PostgREST 12's ``ReadPlanTree`` (src/PostgREST/Plan.hs), composed differently:

- ``messages.order=created_at.desc``, ``messages.limit=1``, ``profiles.username=eq.x``,
  ``profiles.or=(...)`` apply to the embedded level named by the path, matched against
  each embed's name or alias (``updateNode``); a path naming no embed is 400
  ``PGRST108``. Filters on an embed filter its rows, not the parent's.
- The rows of a to-many embed are a correlated subquery, ordered and ranged per parent
  row (PostgREST's LATERAL join), aggregated with ``json_agg``; a to-one embed is
  ``row_to_json`` of its row or null; an embed with nothing selected (``rel()``) is left
  out of the output and only filters.
- ``rel!inner(...)`` keeps the parent rows that have an embedded row (after the embed's
  own filters, order and range); ``rel=not.is.null`` does the same and ``rel=is.null``
  the opposite (``CoercibleFilterNullEmbed``), also inside ``or=(...)``. Both are an
  EXISTS test in the parent's WHERE, so paging and counts see them.
- ``...rel(cols)`` spreads a to-one embed's columns into the parent's (a LEFT JOIN
  LATERAL); on a to-many relationship it is 400 ``PGRST119``.
- ``order=rel(col)`` orders by a column of an embedded to-one resource; on a to-many one
  it is 400 ``PGRST118``.

Aliases in the SQL are our own (``_s``, ``_t<n>``, ``_e<n>``, ``_p<n>``), relation and
column names come from the catalog, and every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from backend_checks.reference import embed as relationships
from backend_checks.reference.catalog import Catalog, Relation
from backend_checks.reference.clauses import (
    CASTS,
    EmbedTest,
    RelatedOrder,
    column_ref,
    json_alias,
    logic_sql,
    order_sql,
    page_sql,
)
from backend_checks.reference.errors import ApiError, rest_error
from backend_checks.reference.parse import Condition, Logic, OrderTerm, SelectItem

__all__ = [
    "Aliases",
    "Embed",
    "Level",
    "Node",
    "Part",
    "build",
    "projection",
    "related_order",
    "where_parts",
]

#: Composed SQL and its parameters, in the order of their placeholders.
Part = tuple[sql.Composable, list[Any]]


@dataclass
class Level:
    """What the query string asks of one level: filters, order and range."""

    filters: list[Condition | Logic] = field(default_factory=list)
    order: list[OrderTerm] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class Embed:
    """An embedded select item, its relationship, and the level it reads."""

    item: SelectItem
    relationship: relationships.Relationship
    node: Node


@dataclass(frozen=True)
class Node:
    """One level of the read: its relation, columns, embeds and query-string part."""

    rel: Relation
    columns: tuple[SelectItem, ...]
    embeds: tuple[Embed, ...]
    level: Level

    @property
    def shown(self) -> bool:
        """False when nothing below selects a column (``rel()``): PostgREST omits it."""
        return bool(self.columns) or any(e.node.shown for e in self.embeds)


class Aliases:
    """Fresh table aliases for one statement (``_t1``, ``_t2``, ...)."""

    def __init__(self) -> None:
        self._n = 0

    def next(self, prefix: str = "_t") -> str:
        """A new alias with ``prefix``."""
        self._n += 1
        return f"{prefix}{self._n}"


def _not_embedded(name: str) -> ApiError:
    return rest_error(
        400,
        "PGRST108",
        f"'{name[:100]}' is not an embedded resource in this request",
        hint=f"Verify that '{name[:100]}' is included in the 'select' query parameter.",
    )


def _assign(
    items: list[SelectItem], levels: Mapping[tuple[str, ...], Level]
) -> dict[tuple[int, ...], Level]:
    """The levels keyed by the index path of the embed each names.

    Raises ApiError 400 (PGRST108) for a path that names no embedded item.
    """
    assigned: dict[tuple[int, ...], Level] = {}
    for path, level in levels.items():
        current: list[SelectItem] = items
        where: tuple[int, ...] = ()
        for name in path:
            found = next(
                (i for i, it in enumerate(current)
                 if it.embed is not None and name in (it.name, it.alias)),
                None,
            )  # fmt: skip
            if found is None:
                raise _not_embedded(name)
            where = (*where, found)
            current = list(current[found].embed or ())
        assigned[where] = level
    return assigned


def _node(
    catalog: Catalog | None,
    rel: Relation,
    items: list[SelectItem],
    where: tuple[int, ...],
    assigned: dict[tuple[int, ...], Level],
) -> Node:
    columns = tuple(item for item in items if item.embed is None)
    embeds: list[Embed] = []
    for index, item in enumerate(items):
        if item.embed is None:
            continue
        if catalog is None:
            raise rest_error(400, "PGRST100", "embedding is not available here")
        relationship, target = relationships.find_relationship(catalog, rel, item)
        if item.spread and not relationship.to_one:
            raise rest_error(
                400,
                "PGRST119",
                f"A spread operation on '{item.name}' is not possible",
                details=f"'{rel.name}' and '{item.name}' do not form a many-to-one or"
                " one-to-one relationship",
            )
        child = _node(catalog, target, list(item.embed), (*where, index), assigned)
        embeds.append(Embed(item, relationship, child))
    return Node(rel, columns, tuple(embeds), assigned.get(where, Level()))


def build(
    catalog: Catalog | None,
    rel: Relation,
    items: list[SelectItem],
    root: Level,
    embedded: Mapping[tuple[str, ...], Level],
) -> Node:
    """The read tree of ``items`` over ``rel``: ``root`` for the top level, ``embedded``
    keyed by embed path (``("conversations", "messages")``).

    Raises ApiError: 400 PGRST108 (a path naming no embed), PGRST200 / 300 PGRST201 (no
    or several relationships), 400 PGRST119 (spread of a to-many relationship).
    """
    assigned = _assign(items, {path: lvl for path, lvl in embedded.items() if path})
    assigned[()] = root
    return _node(catalog, rel, items, (), assigned)


def _find(node: Node, name: str) -> Embed | None:
    """The embed a filter or order names (its alias, else its name), as PostgREST."""
    return next((e for e in node.embeds if e.item.key == name), None)


def _rows(embed: Embed, outer: str, names: Aliases, *, select: bool, ranged: bool) -> Part:
    """``SELECT ... FROM <embedded> WHERE <join to outer> AND <its filters> [ORDER/LIMIT]``:
    the rows of ``embed`` for the row aliased ``outer`` (just ``1`` when not ``select``)."""
    node, here = embed.node, names.next()
    params: list[Any] = []
    laterals: sql.Composable = sql.SQL("")
    if select:
        columns, params, laterals, lateral_params = projection(node, here, names, qualify=True)
        params = params + lateral_params
    else:
        columns = sql.SQL("1")
    source, join = relationships.join_source(embed.relationship, node.rel, here, outer)
    conditions, where_params = where_parts(node, here, names, ranged=ranged)
    params += where_params
    tail: sql.Composable = sql.SQL("")
    if ranged and (select or node.level.limit is not None or node.level.offset):
        tail = order_sql(node.rel, node.level.order, params, here, related_order(node, here, names))
        tail += page_sql(node.level.limit, node.level.offset, params)
    statement = sql.SQL("SELECT {} FROM {} AS {}{} WHERE {}{}").format(
        columns, source, sql.Identifier(here), laterals,
        sql.SQL(" AND ").join([join, *conditions]), tail,
    )  # fmt: skip
    return statement, params


def _embed_test(node: Node, table: str, names: Aliases, *, ranged: bool) -> EmbedTest:
    def test(name: str, params: list[Any]) -> sql.Composable | None:
        embed = _find(node, name) if "->" not in name else None
        if embed is None:
            return None
        rows, rows_params = _rows(embed, table, names, select=False, ranged=ranged)
        params.extend(rows_params)
        return sql.SQL("({})").format(rows)

    return test


def where_parts(
    node: Node, table: str, names: Aliases, *, ranged: bool, qualify: bool = True
) -> tuple[list[sql.Composable], list[Any]]:
    """The conditions of ``node``'s rows aliased ``table``: its filters (``rel=is.null``
    on an embed as NOT EXISTS), then an EXISTS per ``!inner`` embed. ``ranged``: whether
    embedded order and range count (PostgREST's count query leaves them out).

    Raises ApiError 400 on unknown columns.
    """
    params: list[Any] = []
    test = _embed_test(node, table, names, ranged=ranged)
    qualifier = table if qualify else None
    parts: list[sql.Composable] = [
        logic_sql(node.rel, f, params, qualifier, test) for f in node.level.filters
    ]
    for embed in node.embeds:
        if embed.item.join == "inner":
            rows, rows_params = _rows(embed, table, names, select=False, ranged=ranged)
            params.extend(rows_params)
            parts.append(sql.SQL("EXISTS ({})").format(rows))
    return parts, params


def related_order(node: Node, table: str, names: Aliases) -> RelatedOrder:
    """``order=rel(col)`` on ``node`` (rows aliased ``table``): the column of its to-one
    embed ``rel``; the resolver raises ApiError 400 PGRST108 (no such embed) or PGRST118
    (a to-many one)."""

    def value(term: OrderTerm, params: list[Any]) -> sql.Composable:
        embed = _find(node, term.relation or "")
        if embed is None:
            raise _not_embedded(term.relation or "")
        if not embed.relationship.to_one:
            raise rest_error(
                400,
                "PGRST118",
                f"A related order on '{embed.item.key}' is not possible",
                details=f"'{node.rel.name}' and '{embed.item.key}' do not form a many-to-one"
                " or one-to-one relationship",
            )
        here = names.next()
        col = column_ref(embed.node.rel, term.column, "order", params, here)
        source, join = relationships.join_source(embed.relationship, embed.node.rel, here, table)
        conditions, where_params = where_parts(embed.node, here, names, ranged=False)
        params.extend(where_params)
        return sql.SQL("(SELECT {} FROM {} AS {} WHERE {} LIMIT 1)").format(
            col, source, sql.Identifier(here), sql.SQL(" AND ").join([join, *conditions])
        )

    return value


def projection(
    node: Node, table: str, names: Aliases, *, qualify: bool
) -> tuple[sql.Composable, list[Any], sql.Composable, list[Any]]:
    """The select list of ``node``'s rows aliased ``table``, and the LATERAL joins its
    spread embeds need: ``(list, list params, joins, joins params)``.

    Columns come first, then embeds, in ``select=`` order, as PostgREST writes them.
    ``qualify``: prefix columns with ``table`` (always when spreads join other rows).
    Raises ApiError 400 on unknown columns, bad casts and bad JSON paths.
    """
    spreads = any(e.item.spread for e in node.embeds)
    qualifier = table if qualify or spreads else None
    params: list[Any] = []
    parts: list[sql.Composable] = []
    for item in node.columns:
        if item.name == "*":
            parts.append(sql.SQL("{}.*").format(sql.Identifier(qualifier)) if qualifier
                         else sql.SQL("*"))  # fmt: skip
            continue
        expr = column_ref(node.rel, item.name, "select", params, qualifier)
        if item.cast is not None:
            if item.cast.lower() not in CASTS:
                raise rest_error(400, "PGRST100", f"cast to {item.cast!r} is not supported")
            expr = sql.SQL("{}::{}").format(expr, sql.SQL(item.cast.lower()))
        name = item.alias or json_alias(item.name) or item.name
        parts.append(sql.SQL("{} AS {}").format(expr, sql.Identifier(name)))
    joins: list[sql.Composable] = []
    join_params: list[Any] = []
    for embed in node.embeds:
        if embed.item.spread:
            alias = names.next("_p")
            rows, rows_params = _rows(embed, table, names, select=True, ranged=True)
            joins.append(sql.SQL(" LEFT JOIN LATERAL ({}) AS {} ON true").format(
                rows, sql.Identifier(alias)))  # fmt: skip
            join_params += rows_params
            if embed.node.shown:
                parts.append(sql.SQL("{}.*").format(sql.Identifier(alias)))
        elif embed.node.shown:
            value, value_params = _value(embed, table, names)
            params += value_params
            parts.append(sql.SQL("{} AS {}").format(value, sql.Identifier(embed.item.key)))
    # No part at all (``select=rel!inner()``) is a zero-column row: ``{}``, as PostgREST.
    return sql.SQL(", ").join(parts), params, sql.SQL("").join(joins), join_params


def _value(embed: Embed, outer: str, names: Aliases) -> Part:
    """The embedded object (to-one, or null) or array (to-many) for the row ``outer``."""
    rows, params = _rows(embed, outer, names, select=True, ranged=True)
    alias = sql.Identifier(names.next("_e"))
    if embed.relationship.to_one:
        return sql.SQL("(SELECT row_to_json({a}) FROM ({rows}) {a} LIMIT 1)").format(
            a=alias, rows=rows
        ), params
    return sql.SQL("(SELECT coalesce(json_agg({a}), '[]'::json) FROM ({rows}) {a})").format(
        a=alias, rows=rows
    ), params
