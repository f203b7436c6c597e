"""The foreign keys a view carries over from its tables, as PostgREST infers them, so a
view can be embedded and embed like the tables under it.

PostgREST reads each view's stored query (``pg_rewrite.ev_action``, PostgreSQL's node
tree as text) and takes from its top-level target list where every output column comes
from: ``resorigtbl``/``resorigcol``, which PostgreSQL sets for a column that is a plain
reference to a table column, through joins and subqueries in FROM. A view of a view is
followed down to the table, whatever its schema. Each foreign key of a table then holds
for every view of the API that shows all its columns, on either side or both
(``conversation_list.id`` is ``conversations.id``: ``messages`` embeds
``conversation_list`` by ``messages_conversation_id_fkey``), and a view that shows a
table's whole primary key has it as its own (``addViewPrimaryKeys``: a view can then be
the junction of a many-to-many relationship, and the key of an upsert).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from backend_checks.reference.catalog import ForeignKey

__all__ = ["ViewColumns", "parse_node_tree", "target_origins", "view_columns", "view_foreign_keys"]

#: The node tree is a list of these: a node ({NAME :field value ...}) is a dict with
#: its name under "", a list is a list, anything else its token as text (None for <>).
Node = dict[str, Any] | list[Any] | str | None


#: A delimiter, or a run of other characters where a backslash escapes the next one.
_TOKEN = re.compile(r"[(){}]|(?:\\.|[^\s(){}\\])+", re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)


def _tokens(text: str) -> list[str | tuple[str]]:
    """The tokens of ``text``: delimiters ( ) { } as 1-tuples, the rest as text with
    their backslash escapes undone (``""`` is the empty text)."""
    out: list[str | tuple[str]] = []
    for token in _TOKEN.findall(text):
        if token in ("(", ")", "{", "}"):
            out.append((token,))
        elif token == '""':
            out.append("")
        else:
            out.append(_ESCAPE.sub(r"\1", token) if "\\" in token else token)
    return out


def parse_node_tree(text: str) -> Node:
    """``text`` (``nodeToString``'s output, e.g. ``pg_rewrite.ev_action::text``) as Python
    values (see :data:`Node`). Raises ValueError when it is not well formed."""
    tokens = _tokens(text)
    at = 0

    def value() -> Node:
        nonlocal at
        if at >= len(tokens):
            raise ValueError("the node tree ends early")
        token = tokens[at]
        at += 1
        if token == ("{",):
            return node()
        if token == ("(",):
            items: list[Any] = []
            while tokens[at] != (")",):
                items.append(value())
            at += 1
            return items
        if isinstance(token, tuple):
            raise ValueError(f"unexpected {token[0]!r} in the node tree")
        return None if token == "<>" else token

    def node() -> dict[str, Any]:
        nonlocal at
        name = tokens[at]
        at += 1
        fields: dict[str, Any] = {"": name}
        while tokens[at] != ("}",):
            key = tokens[at]
            at += 1
            if not isinstance(key, str) or not key.startswith(":"):
                raise ValueError(f"a field name expected in {name}, not {key!r}")
            fields[key[1:]] = value()
            if key == ":constvalue" and fields["constvalue"] is not None:
                # A Datum: its length, then its bytes as [ b b ... ].
                while tokens[at] != "]":
                    at += 1
                at += 1
        at += 1
        return fields

    try:
        return value()
    except IndexError:
        raise ValueError("the node tree ends early") from None


def target_origins(ev_action: str) -> dict[int, tuple[int, int]]:
    """The output columns of a view's stored query (``ev_action``) that are plain
    references to a relation's column: column number -> (relation oid, column number)."""
    tree = parse_node_tree(ev_action)
    query = tree[0] if isinstance(tree, list) and tree else None
    if not isinstance(query, dict):
        return {}
    origins: dict[int, tuple[int, int]] = {}
    for entry in query.get("targetList") or []:
        if not isinstance(entry, dict) or entry.get("resjunk") == "true":
            continue
        number, table, column = entry.get("resno"), entry.get("resorigtbl"), entry.get("resorigcol")
        if number and table and column and table != "0" and column != "0":
            origins[int(number)] = (int(table), int(column))
    return origins


#: Views of every schema but PostgreSQL's own: a view of the API may show one of another
#: schema, followed down to the table as PostgREST does.
_VIEWS_SQL = """
SELECT c.oid, n.nspname, r.ev_action::text
FROM pg_rewrite r
JOIN pg_class c ON c.oid = r.ev_class
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE r.rulename = '_RETURN' AND c.relkind IN ('v', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""

_COLUMNS_SQL = """
SELECT a.attrelid, a.attnum, a.attname, n.nspname, c.relname
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""

_PRIMARY_KEYS_SQL = """
SELECT n.nspname, c.relname,
       array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'p' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""

#: A relation: (schema, name).
Name = tuple[str, str]


@dataclass(frozen=True)
class ViewColumns:
    """What the views of the exposed schemas show of tables: view -> table -> table
    column -> the view's columns showing it (in the view's column order)."""

    shown: dict[Name, dict[Name, dict[str, list[str]]]]
    #: The primary keys of the tables of every schema: table -> its columns, in order.
    primary_keys: dict[Name, tuple[str, ...]]

    def views_over(self, table: Name) -> list[tuple[Name, dict[str, list[str]]]]:
        """The views showing columns of ``table``, with which."""
        return [(view, tables[table]) for view, tables in self.shown.items() if table in tables]

    def primary_key(self, view: Name) -> tuple[str, ...]:
        """The view's primary key, as PostgREST makes it: for every table whose whole
        primary key it shows, the first of its columns showing each key column."""
        columns: list[str] = []
        for table, mapping in self.shown.get(view, {}).items():
            key = self.primary_keys.get(table, ())
            if key and all(c in mapping for c in key):
                columns += [mapping[c][0] for c in key if mapping[c][0] not in columns]
        return tuple(columns)


async def view_columns(
    conn: psycopg.AsyncConnection[tuple[object, ...]], exposed: list[str]
) -> ViewColumns:
    """Read which table columns the views of ``exposed`` show (through views of views,
    of any schema, down to the table). Raises psycopg.Error."""
    cur = await conn.execute(_VIEWS_SQL)
    views: dict[int, tuple[str, dict[int, tuple[int, int]]]] = {}
    for oid, schema, action in await cur.fetchall():
        try:
            origins = target_origins(str(action))
        except (ValueError, RecursionError):
            continue  # a tree we cannot read: the view shows nothing we know of
        views[int(oid)] = (str(schema), origins)  # type: ignore[call-overload]
    cur = await conn.execute(_PRIMARY_KEYS_SQL)
    keys = {
        (str(schema), str(table)): tuple(str(c) for c in cols)  # type: ignore[attr-defined]
        for schema, table, cols in await cur.fetchall()
    }
    if not views:
        return ViewColumns({}, keys)
    wanted = set(views) | {t for _, origins in views.values() for t, _ in origins.values()}
    cur = await conn.execute(_COLUMNS_SQL, (sorted(wanted),))
    columns: dict[tuple[int, int], tuple[str, str, str]] = {}
    for relid, attnum, attname, schema, relname in await cur.fetchall():
        key = (int(relid), int(attnum))  # type: ignore[call-overload]
        columns[key] = (str(schema), str(relname), str(attname))

    def down(oid: int, attnum: int, seen: frozenset[int]) -> tuple[str, str, str] | None:
        """The table column under column ``attnum`` of relation ``oid``."""
        if oid not in views:
            return columns.get((oid, attnum))
        inner = views[oid][1].get(attnum)
        if inner is None or inner[0] in seen:
            return None
        return down(*inner, seen | {inner[0]})

    shown: dict[Name, dict[Name, dict[str, list[str]]]] = {}
    for oid, (schema, origins) in views.items():
        if schema not in exposed:
            continue  # followed from the exposed ones only
        for number, (table, attnum) in sorted(origins.items()):
            name = columns.get((oid, number))
            origin = down(table, attnum, frozenset({oid, table}))
            if name is None or origin is None:
                continue
            view = (name[0], name[1])
            by_column = shown.setdefault(view, {}).setdefault((origin[0], origin[1]), {})
            by_column.setdefault(origin[2], []).append(name[2])
    return ViewColumns(shown, keys)


#: A foreign key with the schemas of its two tables: (schema, referenced schema, key).
SchemaKey = tuple[str, str, ForeignKey]


def view_foreign_keys(keys: list[SchemaKey], views: ViewColumns) -> list[SchemaKey]:
    """The keys ``keys`` give views: each key once more for every choice of a view in place
    of its table, of its referenced table, or of both, that shows all that side's
    columns (a column shown twice: once for each)."""

    def sides(table: Name, cols: tuple[str, ...]) -> list[tuple[Name, tuple[str, ...]]]:
        found = [(table, cols)]
        for view, mapping in views.views_over(table):
            if all(c in mapping for c in cols):
                found += [
                    (view, chosen) for chosen in itertools.product(*(mapping[c] for c in cols))
                ]
        return found

    derived: list[SchemaKey] = []
    for schema, ref_schema, fk in keys:
        table, ref = (schema, fk.table), (ref_schema, fk.ref_table)
        for (t, cols), (r, ref_cols) in itertools.product(
            sides(table, fk.columns), sides(ref, fk.ref_columns)
        ):
            if t == table and r == ref:
                continue  # the table's own key
            variant = replace(fk, table=t[1], columns=cols, ref_table=r[1], ref_columns=ref_cols)
            derived.append((t[0], r[0], variant))
    return derived
