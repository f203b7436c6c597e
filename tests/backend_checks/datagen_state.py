"""What the data generator's tests compare: its rows, its catalog, its staging schema."""

from __future__ import annotations

import psycopg

from backend_checks.datagen import STAGE_SCHEMA, DatagenParams

__all__ = ["TINY", "catalog", "fingerprint", "has_staging"]

#: The generator tests' data set: small enough to build in a fraction of a second.
TINY = DatagenParams(messages=3_000, users=50, conversations=200, seed=3)


def fingerprint(dsn: str) -> tuple[object, ...]:
    """A digest of every generated row, the users' bcrypt hashes included (their salts
    come from the seed)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """SELECT md5(string_agg(id::text || conversation_id || sender_id || content
                                     || type || coalesce(media_url, '') || created_at
                                     || search_vector::text, ',' ORDER BY id)),
                      (SELECT md5(string_agg(message_id::text || user_id || read_at, ','
                                             ORDER BY message_id, user_id))
                       FROM message_read_receipts),
                      (SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM conversations c),
                      (SELECT md5(string_agg(p::text, ',' ORDER BY id)) FROM profiles p),
                      (SELECT md5(string_agg(id::text || email || encrypted_password, ','
                                             ORDER BY id))
                       FROM auth.users)
               FROM messages"""
        ).fetchone()
    assert row is not None
    return tuple(row)


#: Everything the schema and the generator leave in the catalog: constraints (validated or
#: not), indexes, triggers, policies, relations with owner/ACL/RLS, functions, statistics of
#: the generated tables (autovacuum may analyze devicelab_meta, or not).
CATALOG = """
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' '
       || pg_get_constraintdef(oid) || ' ' || convalidated
FROM pg_constraint WHERE connamespace IN ('public'::regnamespace, 'auth'::regnamespace)
UNION ALL
SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
WHERE c.relnamespace IN ('public'::regnamespace, 'auth'::regnamespace)
UNION ALL
SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname || ' ' || tgenabled::text
FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'policy ' || polrelid::regclass || ' ' || polname FROM pg_policy
UNION ALL
SELECT 'relation ' || oid::regclass || ' ' || relkind::text || relpersistence::text || ' '
       || relrowsecurity || ' ' || coalesce(relacl::text, '') || ' ' || relowner::regrole
FROM pg_class WHERE relnamespace IN ('public'::regnamespace, 'auth'::regnamespace)
  AND relkind IN ('r', 'v', 'i')
UNION ALL
SELECT 'schema ' || nspname FROM pg_namespace
-- pg_temp_N / pg_toast_temp_N belong to whichever backend slot ran a temp table: not schema
WHERE nspname !~ '^pg_(toast_)?temp_[0-9]+$'
UNION ALL
SELECT 'function ' || oid::regprocedure FROM pg_proc
WHERE pronamespace IN ('public'::regnamespace, 'auth'::regnamespace)
UNION ALL
SELECT 'statistics ' || schemaname || '.' || tablename || '.' || attname FROM pg_stats
WHERE schemaname || '.' || tablename IN ('auth.users', 'public.profiles', 'public.conversations',
                                          'public.messages', 'public.message_read_receipts')
ORDER BY 1"""


def catalog(dsn: str) -> list[str]:
    """CATALOG's rows on ``dsn``."""
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(CATALOG)]


def has_staging(dsn: str) -> bool:
    """Whether a staging schema of the parallel path is left on ``dsn``."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (STAGE_SCHEMA,)
        ).fetchone()
    return row != (0,)
