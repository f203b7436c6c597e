"""What the REST layer may name: relations, columns and functions read from pg_catalog.

Every identifier a request carries (table, view, column, function, argument) is looked up
here before any SQL is composed; an unknown name is a 4xx answer, never SQL. The catalog is
a snapshot of the exposed schemas, loaded at startup and reloaded (at most once a second)
when a name is missing, so tables created after start become visible as in PostgREST.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import psycopg

__all__ = [
    "EXPOSED_SCHEMAS",
    "Catalog",
    "Column",
    "Computed",
    "ComputedRelationship",
    "ForeignKey",
    "Function",
    "Relation",
    "load_catalog",
]

#: Schemas the REST API exposes (PostgREST's db-schemas); Supabase's default is public.
EXPOSED_SCHEMAS = ("public",)


@dataclass(frozen=True)
class Column:
    """A column: its name, its SQL type as format_type prints it, its position, and its
    default as SQL text (pg_get_expr with every name schema-qualified; ``nextval`` of
    its sequence for an identity column), used by ``Prefer: missing=default``."""

    name: str
    type: str
    position: int
    default: str | None = None


@dataclass(frozen=True)
class Computed:
    """A computed field (PostgREST's virtual column): a function of an exposed schema
    whose one argument is a relation's row type and which returns one scalar value
    (``CREATE FUNCTION full_name(profiles) RETURNS text``). Selected, filtered and ordered
    by its name as a column, never part of ``*``."""

    #: The function's schema and name.
    schema: str
    function: str
    #: Its result type as format_type prints it (json/jsonb allow JSON paths).
    type: str


@dataclass(frozen=True)
class ComputedRelationship:
    """A computed relationship (PostgREST's): a function of an exposed schema whose one
    argument is a relation's row type and which returns rows of a relation
    (``CREATE FUNCTION sender_profile(messages) RETURNS SETOF profiles ROWS 1``),
    embedded by its name. One object when it returns one row (not SETOF, or ``ROWS
    1``), else an array."""

    schema: str
    function: str
    #: (schema, name) of the relation of the rows it returns.
    target: tuple[str, str]
    single_row: bool


@dataclass(frozen=True)
class Relation:
    """A table, view, materialized view or foreign table of an exposed schema."""

    schema: str
    name: str
    kind: str
    columns: dict[str, Column]
    primary_key: tuple[str, ...] = ()
    #: Computed fields by name (a column of the same name wins, as in PostgreSQL).
    computed: dict[str, Computed] = field(default_factory=dict)

    def column(self, name: str) -> Column | None:
        """The column called ``name``, or None."""
        return self.columns.get(name)

    def computed_field(self, name: str) -> Computed | None:
        """The computed field called ``name`` when no column has that name, or None."""
        return None if name in self.columns else self.computed.get(name)


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key between two relations of the exposed schemas (for embedding)."""

    name: str
    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    #: True when its columns are exactly a primary key or unique constraint of ``table``:
    #: PostgREST then sees one-to-one instead of many-to-one.
    one_to_one: bool = False


@dataclass(frozen=True)
class Function:
    """A function callable over ``/rpc``: its input arguments and how it returns."""

    schema: str
    name: str
    #: Input argument names and their SQL types, in order.
    args: tuple[tuple[str, str], ...]
    #: How many trailing arguments have defaults.
    n_defaults: int
    returns_set: bool
    #: True when it returns rows with columns (a table type, RETURNS TABLE, OUT params:
    #: one named column too, as PostgREST answers ``[{"col": ...}]`` there).
    returns_rows: bool
    return_type: str
    volatile: bool
    #: Column names of the rows it returns (empty for scalar results).
    out_columns: tuple[str, ...] = ()
    #: (schema, name) of the table or view whose row type it returns (``RETURNS
    #: messages``, ``SETOF messages``): its rows embed that relation's relationships.
    table: tuple[str, str] | None = None

    def result_relation(self, catalog: Catalog | None = None) -> Relation:
        """The rows it returns seen as a relation, so filters on them are checked too:
        the exposed table or view of its row type when there is one (in ``catalog``),
        else one named after the function (which no relationship starts from)."""
        if catalog is not None and self.table is not None:
            relation = catalog.relation(self.table[1], self.table[0])
            if relation is not None:
                return relation
        cols = {c: Column(c, "", i) for i, c in enumerate(self.out_columns, 1)}
        return Relation(self.schema, self.name, "function", cols)

    def required(self) -> set[str]:
        """Names of the arguments without a default."""
        return {name for name, _ in self.args[: len(self.args) - self.n_defaults]}

    def accepts(self, given: set[str]) -> bool:
        """True when ``given`` names every required argument and no unknown one."""
        names = {name for name, _ in self.args}
        return self.required() <= given <= names


@dataclass
class Catalog:
    """A snapshot of the exposed schemas, with the time it was loaded."""

    relations: dict[tuple[str, str], Relation] = field(default_factory=dict)
    functions: dict[tuple[str, str], list[Function]] = field(default_factory=dict)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    #: By the (schema, name) of the relation whose row they take, then by name.
    computed_relationships: dict[tuple[str, str], dict[str, ComputedRelationship]] = field(
        default_factory=dict
    )
    loaded_at: float = 0.0

    def relation(self, name: str, schema: str = "public") -> Relation | None:
        """The relation ``schema.name``, or None."""
        return self.relations.get((schema, name))

    def function(self, name: str, given: set[str], schema: str = "public") -> Function | None:
        """The overload of ``schema.name`` that accepts arguments ``given``, or None."""
        for candidate in self.functions.get((schema, name), []):
            if candidate.accepts(given):
                return candidate
        return None

    def has_function(self, name: str, schema: str = "public") -> bool:
        """True when some function ``schema.name`` exists (whatever its arguments)."""
        return bool(self.functions.get((schema, name)))

    def stale(self, min_age_s: float = 1.0) -> bool:
        """True when the snapshot is older than ``min_age_s`` (a reload is allowed)."""
        return time.monotonic() - self.loaded_at >= min_age_s


_RELATIONS_SQL = """
SELECT n.nspname, c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod),
       a.attnum,
       coalesce(a.attnum = ANY(i.indkey), false) AS in_pk
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
ORDER BY n.nspname, c.relname, a.attnum
"""

_FUNCTIONS_SQL = """
SELECT n.nspname, p.proname, p.proargnames, p.proargmodes,
       array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) WITH ORDINALITY AS u(t, o)
             ORDER BY o),
       p.pronargdefaults, p.proretset,
       (rt.typtype = 'c' OR p.prorettype = 'record'::regtype
        OR coalesce(p.proargmodes && ARRAY['o', 'b', 't']::"char"[], false)) AS returns_rows,
       format_type(p.prorettype, NULL), p.provolatile <> 'i' AND p.provolatile <> 's',
       CASE WHEN p.proargmodes IS NOT NULL AND rt.typrelid = 0 THEN
            array(SELECT p.proargnames[o] FROM unnest(p.proargmodes) WITH ORDINALITY AS m(md, o)
                  WHERE md IN ('o', 't', 'b') ORDER BY o)
       ELSE array(SELECT attname::text FROM pg_attribute
                  WHERE attrelid = rt.typrelid AND attnum > 0 AND NOT attisdropped
                  ORDER BY attnum)
       END,
       CASE WHEN rc.oid IS NOT NULL THEN ARRAY[rn.nspname::text, rc.relname::text] END,
       -- The relation of a computed field or relationship: its one argument's row type.
       CASE WHEN p.pronargs = 1 THEN
            (SELECT ARRAY[an.nspname::text, ac.relname::text]
             FROM pg_type at JOIN pg_class ac ON ac.oid = at.typrelid
             JOIN pg_namespace an ON an.oid = ac.relnamespace
             WHERE at.oid = p.proargtypes[0] AND ac.relkind IN ('r', 'v', 'm', 'f', 'p'))
       END,
       p.prorows
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_type rt ON rt.oid = p.prorettype
LEFT JOIN pg_class rc ON rc.oid = rt.typrelid AND rc.relkind IN ('r', 'v', 'm', 'f', 'p')
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE n.nspname = ANY(%s) AND p.prokind = 'f'
ORDER BY n.nspname, p.proname, p.pronargs DESC
"""


#: Column defaults, read with an empty search_path so that the text names every object
#: by its schema (as PostgREST's schema cache reads them); generated columns have none
#: to give, an identity column the next value of its sequence.
_DEFAULTS_SQL = """
SELECT n.nspname, c.relname, a.attname,
       CASE WHEN a.attidentity = 'd'
            THEN format('nextval(%%L::regclass)',
                        pg_get_serial_sequence(format('%%I.%%I', n.nspname, c.relname),
                                               a.attname))
            ELSE pg_get_expr(ad.adbin, ad.adrelid) END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
  AND (ad.oid IS NOT NULL OR a.attidentity = 'd')
"""

#: Of every schema: a key between two tables of another schema holds for views of the
#: API over them. Only those whose two sides are exposed are kept.
_FOREIGN_KEYS_SQL = """
SELECT ns.nspname, fns.nspname, con.conname, cl.relname,
       array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
       fcl.relname,
       array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o),
       EXISTS (SELECT 1 FROM pg_constraint u
               WHERE u.conrelid = con.conrelid AND u.contype IN ('p', 'u')
                 AND u.conkey @> con.conkey AND u.conkey <@ con.conkey)
FROM pg_constraint con
JOIN pg_class cl ON cl.oid = con.conrelid
JOIN pg_namespace ns ON ns.oid = cl.relnamespace
JOIN pg_class fcl ON fcl.oid = con.confrelid
JOIN pg_namespace fns ON fns.oid = fcl.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0
  AND ns.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY con.conname
"""


def _input_names(names: list[str] | None, modes: list[str] | None, n_in: int) -> list[str]:
    """Names of the input arguments, aligned with proargtypes (unnamed ones get '')."""
    all_names = list(names or [])
    if modes is None:
        return (all_names + [""] * n_in)[:n_in]
    return [
        all_names[i] if i < len(all_names) else ""
        for i, mode in enumerate(modes)
        if mode in ("i", "b", "v")
    ]


async def load_catalog(
    conn: psycopg.AsyncConnection[tuple[object, ...]], schemas: tuple[str, ...] = EXPOSED_SCHEMAS
) -> Catalog:
    """Read relations and functions of ``schemas``. Raises psycopg.Error on failure."""
    catalog = Catalog(loaded_at=time.monotonic())
    columns: dict[tuple[str, str], dict[str, Column]] = {}
    kinds: dict[tuple[str, str], str] = {}
    pks: dict[tuple[str, str], list[str]] = {}
    cur = await conn.execute(_RELATIONS_SQL, (list(schemas),))
    for schema, rel, kind, col, typ, pos, in_pk in await cur.fetchall():
        key = (str(schema), str(rel))
        kinds[key] = str(kind)
        cols = columns.setdefault(key, {})
        if col is not None:
            cols[str(col)] = Column(str(col), str(typ), int(pos))  # type: ignore[call-overload]
            if in_pk:
                pks.setdefault(key, []).append(str(col))
    for key, kind in kinds.items():
        catalog.relations[key] = Relation(
            key[0], key[1], kind, columns.get(key, {}), tuple(pks.get(key, []))
        )
    cur = await conn.execute(_FUNCTIONS_SQL, (list(schemas),))
    computed: dict[tuple[str, str], dict[str, Computed]] = {}
    for row in await cur.fetchall():
        schema, name, argnames, argmodes, argtypes, ndefaults, retset, rows, rettype, vol = row[:10]
        outs, table, row_of, n_rows = row[10:]
        if row_of:
            # Usually declared with an unnamed argument (``full_name(profiles)``), which
            # keeps it out of /rpc below.
            of = (str(row_of[0]), str(row_of[1]))  # type: ignore[index]
            if table:
                target = (str(table[0]), str(table[1]))  # type: ignore[index]
                single = not retset or float(n_rows) == 1  # type: ignore[arg-type]
                embed = ComputedRelationship(str(schema), str(name), target, single)
                catalog.computed_relationships.setdefault(of, {}).setdefault(str(name), embed)
            elif not retset and not rows:
                field_ = Computed(str(schema), str(name), str(rettype))
                computed.setdefault(of, {}).setdefault(field_.function, field_)
        types = [str(t) for t in argtypes]  # type: ignore[attr-defined]
        names = _input_names(argnames, argmodes, len(types))  # type: ignore[arg-type]
        if any(not n for n in names):
            continue  # PostgREST cannot call functions with unnamed arguments either
        fn = Function(
            str(schema),
            str(name),
            tuple(zip(names, types, strict=True)),
            int(ndefaults),  # type: ignore[call-overload]
            bool(retset),
            bool(rows),
            str(rettype),
            bool(vol),
            tuple(str(c) for c in outs or ()),  # type: ignore[attr-defined]
            (str(table[0]), str(table[1])) if table else None,  # type: ignore[index]
        )
        catalog.functions.setdefault((fn.schema, fn.name), []).append(fn)
    from backend_checks.reference.view_keys import view_columns, view_foreign_keys

    views = await view_columns(conn, list(schemas))
    for key, relation in catalog.relations.items():
        keyed = replace(relation, primary_key=views.primary_key(key)) if relation.kind in (
            "v", "m") else relation  # fmt: skip
        catalog.relations[key] = replace(keyed, computed=computed.get(key, {}))
    cur = await conn.execute(_FOREIGN_KEYS_SQL)
    keys: list[tuple[str, str, ForeignKey]] = []
    for row in await cur.fetchall():
        schema, ref_schema, name, table, fk_cols, ref_table, ref_cols, one_to_one = row
        fk = ForeignKey(
            str(name),
            str(table),
            tuple(str(c) for c in fk_cols),  # type: ignore[attr-defined]
            str(ref_table),
            tuple(str(c) for c in ref_cols),  # type: ignore[attr-defined]
            bool(one_to_one),
        )
        keys.append((str(schema), str(ref_schema), fk))
    # A view embeds, and is embedded, by the keys of the tables whose columns it shows.
    keys += view_foreign_keys(keys, views)
    catalog.foreign_keys = [fk for s, r, fk in keys if s in schemas and r in schemas]
    await _load_defaults(conn, catalog, schemas)
    return catalog


async def _load_defaults(
    conn: psycopg.AsyncConnection[tuple[object, ...]], catalog: Catalog, schemas: tuple[str, ...]
) -> None:
    """Set the ``default`` of the catalog's columns (the connection is in autocommit)."""
    async with conn.transaction():  # the empty search_path ends with it
        await conn.execute("SELECT set_config('search_path', '', true)")
        cur = await conn.execute(_DEFAULTS_SQL, (list(schemas),))
        for schema, rel, col, default in await cur.fetchall():
            owner = catalog.relations.get((str(schema), str(rel)))
            column = owner.column(str(col)) if owner is not None else None
            if owner is not None and column is not None and default is not None:
                owner.columns[column.name] = replace(column, default=str(default))
