"""What the reference schema's views and functions look like in a database's catalog.

The digest of schema.sql in ``devicelab_meta`` says which devicelab installed the schema
last, as far as devicelab knows; an older devicelab started on the same database again (a
downgrade, a second checkout) re-installs its own schema.sql and leaves that digest as it
was. A digest of the definitions as the catalog holds them, recorded at each install,
tells when anything replaced them since.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

__all__ = ["catalog_fingerprint"]

#: The views and functions a schema text creates in ``public``, by name (schema.name).
#: Not auth.uid(), auth.role(), auth.jwt(): schema.sql makes them only where missing (on
#: Supabase they are the platform's, and its updates are none of devicelab's schema).
_DEFINED = re.compile(r"CREATE (?:OR REPLACE )?(VIEW|FUNCTION) (public\.\w+)")


def catalog_fingerprint(conn: psycopg.Connection[Any], schema_text: str) -> str:
    """A digest of the definitions, as ``conn``'s catalog holds them now, of the views and
    functions ``schema_text`` creates: it changes when anything (an older devicelab's
    schema, a hand edit) replaced one of them. Read-only; ``conn`` must be inside a
    transaction (its search_path is set for the transaction, then put back). Raises
    psycopg.Error."""
    names: dict[str, set[str]] = {"VIEW": set(), "FUNCTION": set()}
    for kind, name in _DEFINED.findall(schema_text):
        names[kind].add(name)
    # pg_get_viewdef qualifies the names its search_path does not show: one fixed path
    # for the digest, whatever the session's, then the session's back (an error rolls the
    # transaction back, and the setting with it).
    was = conn.execute("SELECT current_setting('search_path')").fetchone()
    conn.execute("SELECT set_config('search_path', 'pg_catalog', true)")
    row = conn.execute(
        """SELECT md5(coalesce(string_agg(d, E'\\n' ORDER BY d), '')) FROM (
           SELECT c.oid::regclass::text || pg_get_viewdef(c.oid) AS d
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'v' AND n.nspname || '.' || c.relname = ANY(%(views)s)
           UNION ALL
           SELECT pg_get_functiondef(p.oid)
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE p.prokind = 'f' AND n.nspname || '.' || p.proname = ANY(%(functions)s)
       ) defs""",
        {"views": sorted(names["VIEW"]), "functions": sorted(names["FUNCTION"])},
    ).fetchone()
    conn.execute("SELECT set_config('search_path', %s, true)", (was[0] if was else "",))
    return str(row[0]) if row else ""
