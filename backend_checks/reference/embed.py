"""Resource embedding: the relationships PostgREST derives from foreign keys, which one an
embedded select item names, and the SQL that joins along it.

The rules are PostgREST 12's (``addInverseRels``/``addM2MRels`` in SchemaCache.hs,
``findRel`` in Plan.hs, ``compressedRel`` in Error.hs):

- a foreign key gives many-to-one from its table and one-to-many back; when its columns
  are exactly a primary key or unique constraint, one-to-one both ways (an object both
  ways);
- a junction is a table with two many-to-one keys whose columns are all in its primary
  key; it gives many-to-many between the two referenced tables, both ways;
- ``target(...)`` names every relationship to the table ``target``, or (not for
  many-to-many) the one whose constraint is ``target``, or whose single column on this
  side is ``target``; ``target!hint(...)`` keeps those to the table ``target`` whose
  constraint, single column on either side, or (many-to-many) junction table is ``hint``;
- on a self reference the table name means the one-to-many side (with a ``!hint`` only
  the name of the key's column), the key's column name the many-to-one side; self
  one-to-one and self many-to-many cannot be embedded;
- none found is 400 ``PGRST200``; more than one is 300 ``PGRST201`` listing them, in
  PostgREST's order, with the ``!hint`` for each;
- a computed relationship (a function of the row returning rows of a relation,
  ``Catalog.computed_relationships``) is found by its name first, without a ``!hint``:
  it overrides what the foreign keys would give for that name.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from backend_checks.reference.catalog import Catalog, ForeignKey, Relation
from backend_checks.reference.errors import ApiError, rest_error
from backend_checks.reference.parse import SelectItem

__all__ = [
    "MANY_TO_MANY",
    "MANY_TO_ONE",
    "ONE_TO_MANY",
    "ONE_TO_ONE",
    "Junction",
    "Relationship",
    "find_relationship",
    "join_source",
    "relationships_from",
]

ONE_TO_MANY = "one-to-many"
MANY_TO_ONE = "many-to-one"
ONE_TO_ONE = "one-to-one"
MANY_TO_MANY = "many-to-many"
#: PostgREST sorts candidates by cardinality in this order (its constructors' order).
_CARDINALITY_ORDER = {ONE_TO_MANY: 0, MANY_TO_ONE: 1, ONE_TO_ONE: 2, MANY_TO_MANY: 3}

#: Column pairs of a join: (column on one side, column on the other).
Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Junction:
    """The table between the two sides of a many-to-many relationship."""

    table: str
    #: Its foreign key to the origin, and the pairs (origin column, junction column).
    source_key: str
    source_columns: Pairs
    #: Its foreign key to the target, and the pairs (target column, junction column).
    target_key: str
    target_columns: Pairs


@dataclass(frozen=True)
class Relationship:
    """A way to embed ``foreign_table`` in rows of ``table``."""

    table: str
    foreign_table: str
    cardinality: str
    is_self: bool
    #: The foreign key's name ("" for many-to-many).
    constraint: str = ""
    #: (column of ``table``, column of ``foreign_table``) pairs ("" for many-to-many).
    columns: Pairs = ()
    junction: Junction | None = None
    #: A computed relationship's function (schema, name) and the (schema, name) of the
    #: row type it takes: its rows are the function's of the outer row.
    function: tuple[str, str] | None = None
    row_type: tuple[str, str] | None = None

    @property
    def to_one(self) -> bool:
        """True when the embedding is one object (or null) rather than an array."""
        return self.cardinality in (MANY_TO_ONE, ONE_TO_ONE)

    def _sort_key(self) -> tuple[object, ...]:
        jun = self.junction
        names = (jun.table, jun.source_key, jun.target_key) if jun else (self.constraint,)
        return (self.table, self.foreign_table, self.is_self,
                _CARDINALITY_ORDER[self.cardinality], names, self.columns)  # fmt: skip

    def describe(self) -> dict[str, str]:
        """The relationship as PGRST201's ``details`` lists it."""
        if self.junction is not None:
            jun = self.junction
            how = (f"{jun.table} using {jun.source_key}({_names(jun.source_columns, 1)})"
                   f" and {jun.target_key}({_names(jun.target_columns, 1)})")  # fmt: skip
        else:
            how = (f"{self.constraint} using {self.table}({_names(self.columns, 0)})"
                   f" and {self.foreign_table}({_names(self.columns, 1)})")  # fmt: skip
        return {
            "cardinality": self.cardinality,
            "embedding": f"{self.table} with {self.foreign_table}",
            "relationship": how,
        }

    def suggestion(self) -> str:
        """The ``target!hint`` that names this relationship alone."""
        hint = self.junction.table if self.junction is not None else self.constraint
        return f"'{self.foreign_table}!{hint}'"


def _names(pairs: Pairs, side: int) -> str:
    return ", ".join(pair[side] for pair in pairs)


def _direct(fk: ForeignKey, origin: str) -> list[Relationship]:
    """The relationships ``fk`` gives from ``origin`` (none, one, or two for a self key)."""
    found: list[Relationship] = []
    is_self = fk.table == fk.ref_table
    if fk.table == origin:
        cardinality = ONE_TO_ONE if fk.one_to_one else MANY_TO_ONE
        pairs = tuple(zip(fk.columns, fk.ref_columns, strict=True))
        found.append(Relationship(origin, fk.ref_table, cardinality, is_self, fk.name, pairs))
    if fk.ref_table == origin:
        cardinality = ONE_TO_ONE if fk.one_to_one else ONE_TO_MANY
        pairs = tuple(zip(fk.ref_columns, fk.columns, strict=True))
        found.append(Relationship(origin, fk.table, cardinality, is_self, fk.name, pairs))
    return found


def _many_to_many(catalog: Catalog, origin: str) -> list[Relationship]:
    """Relationships from ``origin`` through junction tables.

    A junction's two keys are many-to-one (not one-to-one), distinct, and all their
    columns are in its primary key; either key may point back at ``origin``.
    """
    found: list[Relationship] = []
    keys = [fk for fk in catalog.foreign_keys if not fk.one_to_one]
    for source in keys:
        if source.ref_table != origin:
            continue
        junction = catalog.relation(source.table)
        primary_key = set(junction.primary_key) if junction else set()
        for target in keys:
            if target.table != source.table or target.name == source.name:
                continue
            if not set(source.columns) | set(target.columns) <= primary_key:
                continue
            via = Junction(
                source.table,
                source.name,
                tuple(zip(source.ref_columns, source.columns, strict=True)),
                target.name,
                tuple(zip(target.ref_columns, target.columns, strict=True)),
            )
            found.append(
                Relationship(origin, target.ref_table, MANY_TO_MANY, origin == target.ref_table,
                             junction=via)
            )  # fmt: skip
    return found


def relationships_from(catalog: Catalog, origin: str) -> list[Relationship]:
    """Every relationship from table ``origin``, in PostgREST's order."""
    found = [rel for fk in catalog.foreign_keys for rel in _direct(fk, origin)]
    found += _many_to_many(catalog, origin)
    return sorted(found, key=Relationship._sort_key)


def _single_column(rel: Relationship, side: int) -> str | None:
    """The one column of a single-column key on ``side`` (0 origin, 1 target), or None."""
    if rel.junction is None and len(rel.columns) == 1:
        return rel.columns[0][side]
    return None


def _named_by(rel: Relationship, target: str, hint: str | None) -> bool:
    """True when ``target!hint`` names ``rel`` (PostgREST's findRel)."""
    if rel.is_self:
        if hint is None:
            return (target == rel.foreign_table and rel.cardinality == ONE_TO_MANY) or (
                rel.cardinality == MANY_TO_ONE and _single_column(rel, 0) == target
            )
        return (target == rel.foreign_table and rel.cardinality == ONE_TO_MANY
                and _single_column(rel, 1) == hint)  # fmt: skip
    if hint is None:
        return (
            target == rel.foreign_table
            or (rel.junction is None and target == rel.constraint)
            or _single_column(rel, 0) == target
        )
    if target != rel.foreign_table:
        return False
    if rel.junction is not None:
        return hint == rel.junction.table
    return hint in (rel.constraint, _single_column(rel, 0), _single_column(rel, 1))


def find_relationship(
    catalog: Catalog, origin: Relation, item: SelectItem
) -> tuple[Relationship, Relation]:
    """The relationship the embedded ``item`` names from ``origin``, and its target.

    Raises ApiError 400 (PGRST200) when none does, 300 (PGRST201) when several do.
    """
    target, hint = item.name[:100], item.hint[:100] if item.hint else None
    computed = _computed(catalog, origin, target) if hint is None else None
    if computed is not None:
        return computed
    # The rows of a function of no table's type (Function.result_relation) relate to
    # nothing, even where a table shares the function's name.
    starts = [] if origin.kind == "function" else relationships_from(catalog, origin.name)
    found = [r for r in starts if _named_by(r, target, hint)]
    embedded = catalog.relation(found[0].foreign_table, origin.schema) if found else None
    if not found or embedded is None:
        using = f"' using the hint '{hint}" if hint is not None else ""
        raise rest_error(
            400,
            "PGRST200",
            f"Could not find a relationship between '{origin.name}' and '{target}'"
            " in the schema cache",
            details=f"Searched for a foreign key relationship between '{origin.name}' and"
            f" '{target}{using}' in the schema '{origin.schema}', but no matches were found.",
        )
    if len(found) > 1:
        raise ApiError(
            300,
            {
                "code": "PGRST201",
                "details": [r.describe() for r in found],
                "hint": f"Try changing '{target}' to one of the following: "
                + ", ".join(r.suggestion() for r in found)
                + ". Find the desired relationship in the 'details' key.",
                "message": "Could not embed because more than one relationship was found for"
                f" '{origin.name}' and '{target}'",
            },
        )
    return found[0], embedded


def _computed(
    catalog: Catalog, origin: Relation, name: str
) -> tuple[Relationship, Relation] | None:
    """The computed relationship ``name`` of ``origin``'s rows and its target, or None.
    As in PostgREST, it is found by its name first: it overrides the relationships of
    the foreign keys that the same name would find."""
    if origin.kind == "function":
        return None
    found = catalog.computed_relationships.get((origin.schema, origin.name), {}).get(name)
    target = catalog.relation(found.target[1], found.target[0]) if found else None
    if found is None or target is None:
        return None
    cardinality = MANY_TO_ONE if found.single_row else ONE_TO_MANY
    is_self = (origin.schema, origin.name) == found.target
    relationship = Relationship(
        origin.name, target.name, cardinality, is_self,
        function=(found.schema, found.function), row_type=(origin.schema, origin.name),
    )  # fmt: skip
    return relationship, target


def _equal(left: str, right: str, pairs: Pairs) -> sql.Composable:
    """``left.a = right.b AND ...`` for the (a, b) ``pairs``."""
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(left), sql.Identifier(a), sql.Identifier(right), sql.Identifier(b)
        )
        for a, b in pairs
    )


def join_source(
    rel: Relationship, embedded: Relation, here: str, outer: str
) -> tuple[sql.Composable, sql.Composable]:
    """``(FROM item, WHERE condition)`` of the rows of ``embedded`` that belong to the row
    aliased ``outer``, the FROM item to be aliased ``here``.

    Join columns come from pg_catalog's foreign keys, never from the request. Across a
    junction the FROM item is a subquery of the embedded table's columns only (so the
    select list sees no junction column), joined as PostgREST joins: a junction row per
    embedded row.
    """
    if rel.function is not None and rel.row_type is not None:
        # The function of the outer row, cast to the row type it takes (a no-op on a
        # table's alias; the fields of a subquery's or CTE's row otherwise).
        call = sql.SQL("{}({}::{})").format(
            sql.Identifier(*rel.function), sql.Identifier(outer), sql.Identifier(*rel.row_type)
        )
        return call, sql.SQL("true")
    table = sql.Identifier(embedded.schema, embedded.name)
    jun = rel.junction
    if jun is None:
        # Pairs are (outer column, embedded column).
        return table, _equal(here, outer, tuple((b, a) for a, b in rel.columns))
    row, link = f"{here}_m", f"{here}_j"
    source = sql.SQL("(SELECT {row}.* FROM {table} AS {row} JOIN {jt} AS {link} ON {on}"
                     " WHERE {where})").format(
        row=sql.Identifier(row),
        table=table,
        jt=sql.Identifier(embedded.schema, jun.table),
        link=sql.Identifier(link),
        on=_equal(link, row, tuple((j, t) for t, j in jun.target_columns)),
        where=_equal(link, outer, tuple((j, o) for o, j in jun.source_columns)),
    )  # fmt: skip
    return source, sql.SQL("true")
