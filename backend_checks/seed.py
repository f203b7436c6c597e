"""Seeding an empty database once, however many runs start on it at the same moment.

The embedded default is shared: two `devicelab run`s, a run and a `backend check`, or the
workers of a pytest-xdist session may all find the managed database empty at once. Each
deciding "empty" on its own, then seeding, made the second replace the tables the first
was already using (its run conversation gone, its Realtime subscriptions refused). Here
the decision is taken under the generator's advisory lock: the first seeds, the others
wait for it and then find the data there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from backend_checks.datagen import (
    LOCK_KEY,
    META_TABLE,
    TABLES,
    DatagenParams,
    DatagenReport,
    generate,
    install_schema,
    schema_digest,
    schema_sql,
)
from backend_checks.schema_catalog import catalog_fingerprint
from backend_checks.server_health import vacuum
from devicelab.errors import BadInput, UnsafeActionRefused

if TYPE_CHECKING:
    import psycopg

_log = logging.getLogger(__name__)

__all__ = [
    "REFERENCE_TABLES",
    "check_app_access",
    "ensure_data",
    "ensure_schema",
    "has_messages",
    "holds_current_schema",
    "missing_reference",
    "schema_behind",
    "seed_if_empty",
]

#: The reference schema's tables and the columns the suite's ``params:`` queries read
#: before any query runs (a database lacking them fails there, before anything is judged).
#: The query files' own needs (functions, the view, other columns) are not required: a
#: query that fails on them is recorded as that check's error, the others still run.
REFERENCE_TABLES: dict[str, tuple[str, ...]] = {
    "public.profiles": ("id",),
    "public.conversations": ("id", "participants"),
    "public.messages": ("id", "conversation_id", "created_at"),
    "public.message_read_receipts": ("message_id", "user_id"),
}


def has_messages(conn: psycopg.Connection[Any]) -> bool:
    """True when ``public.messages`` exists and holds a row. Read-only."""
    row = conn.execute("SELECT to_regclass('public.messages') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return False
    return conn.execute("SELECT 1 FROM public.messages LIMIT 1").fetchone() is not None


def missing_reference(conn: psycopg.Connection[Any]) -> list[str]:
    """The tables and columns of :data:`REFERENCE_TABLES` the database lacks ("public.x",
    "public.x.column"), in that order; empty when it holds them all. Read-only."""
    rows = conn.execute(
        """SELECT n.nspname || '.' || c.relname, a.attname::text
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                                   AND NOT a.attisdropped
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
             AND n.nspname || '.' || c.relname = ANY(%s)""",
        (list(REFERENCE_TABLES),),
    ).fetchall()
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    missing: list[str] = []
    for table, columns in REFERENCE_TABLES.items():
        if table not in found:
            missing.append(table)
        else:
            missing += [f"{table}.{c}" for c in columns if c not in found[table]]
    return missing


def ensure_schema(conn: psycopg.Connection[Any], *, always: bool = False) -> bool:
    """Install the reference schema unless the database already holds this devicelab's
    (its digest in ``devicelab_meta``, and its view and functions as this devicelab left
    them), or whatever it holds with ``always``; under the generator's lock, so runs
    starting together install it once and never beside a seeding. A cluster made by an
    older devicelab otherwise kept its old view and functions; and an older devicelab
    started on it again (a downgrade) put its own back without touching the digest, so
    the catalog's own text is compared too. ``conn`` must not be inside a transaction.

    Returns True when it installed the schema. Raises psycopg.Error.
    """
    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = '15min'")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        if not always and holds_current_schema(conn):
            return False
        install_schema(conn)
    return True


def holds_current_schema(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database holds this devicelab's reference schema as an install left it:
    its digest in ``devicelab_meta`` and its view's and functions' text still the
    catalog's. Reads only. Raises psycopg.Error."""
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL AND to_regclass('public.messages') IS NOT NULL",
        (META_TABLE,),
    ).fetchone()
    if not (row and row[0]):
        return False
    held = _schema_marks(conn)
    return held.get("schema") == schema_digest() and held.get(
        "schema_catalog"
    ) == catalog_fingerprint(conn, schema_sql())


def _schema_marks(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The schema digest and catalog fingerprint an install recorded in ``devicelab_meta``
    (keys ``schema`` and ``schema_catalog``, either absent). Raises psycopg.Error."""
    rows = conn.execute(
        f"SELECT key, value #>> '{{}}' FROM {META_TABLE} WHERE key IN ('schema', 'schema_catalog')"
    ).fetchall()
    return {str(key): str(value) for key, value in rows}


def check_app_access(conn: psycopg.Connection[Any]) -> None:
    """Refuse a role the checks cannot work as: one that reads the tables through
    row-level security (not their owner, no BYPASSRLS: it saw "no messages" in a full
    database, and was told to seed it), or one that may not become the app's role
    ``authenticated`` (every query, plan and simulated user runs as it: each failed alone,
    and a minute of load measured only refusals). Read-only; ``conn`` must not be inside
    a transaction.

    Raises BadInput (exit 2) naming the role and the grant that fixes it; psycopg.Error.
    """
    import psycopg

    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "SELECT current_user, to_regclass('public.messages') IS NOT NULL"
            " AND row_security_active('public.messages')"
        ).fetchone()
        user, hidden = (str(row[0]), bool(row[1])) if row else ("?", False)
    if hidden:
        raise BadInput(
            f"role {user} reads public.messages through row-level security (it is not the"
            " tables' owner and has no BYPASSRLS): it sees only what the policies let it",
            hint=f"connect as the tables' owner or a role with BYPASSRLS (ALTER ROLE {user}"
            " BYPASSRLS); Supabase's postgres role is one",
        )
    try:
        with conn.transaction(force_rollback=True):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'authenticated'")
            if exists.fetchone():  # else the schema is not there yet: seeding creates it
                conn.execute("SET LOCAL ROLE authenticated")
    except psycopg.errors.InsufficientPrivilege:
        raise BadInput(
            f"role {user} may not act as the app's role authenticated: the queries, their"
            " plans and the simulated users run as it, with its row-level security",
            hint=f"GRANT authenticated TO {user} (Supabase's postgres role is a member)",
        ) from None


def seed_if_empty(
    conn: psycopg.Connection[Any], params: DatagenParams, *, reset_statements: bool = False
) -> DatagenReport | None:
    """Generate ``params`` into ``conn``'s database unless it holds messages, deciding
    under the generator's lock (another seeding in progress is waited for, up to its
    15-minute statement timeout). ``conn`` must not be inside a transaction.

    Returns the DatagenReport, or None when the database already had messages. Raises
    what :func:`backend_checks.datagen.generate` raises (UnsafeActionRefused,
    BackendUnavailable); psycopg.Error when the lock or the check fails.
    """
    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = '15min'")
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        with conn.transaction():
            if has_messages(conn):
                return None
        # The generator takes the same lock again: advisory locks are re-entrant for the
        # session holding them, whatever their level.
        report = generate(conn, params, allow_writes=True, reset_statements=reset_statements)
        _settle(conn)
        return report
    finally:
        _unlock(conn)


def _settle(conn: psycopg.Connection[Any]) -> None:
    """VACUUM (ANALYZE) the tables a seeding just filled, before anything is measured on
    them. Their inserts count for autovacuum only once committed, after the generator's
    own ANALYZE: left, autovacuum vacuumed and analyzed 100K messages a minute into the
    device run that seeded them, on one of the machine's two cores, and four of twenty
    4G conversation-list loads took 201-227 ms instead of 191-197 (p95 211 ms, a fail)."""
    vacuum(conn, list(TABLES), analyze=True)


def _unlock(conn: psycopg.Connection[Any]) -> None:
    import psycopg

    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    except psycopg.Error:  # a broken connection: its locks went with it
        pass


def schema_behind(conn: psycopg.Connection[Any]) -> str | None:
    """A one-line warning when the database holds devicelab's reference schema as another
    devicelab installed it (its digest in ``devicelab_meta`` is not this version's, or its
    view and functions changed since), else None (this version's, or not devicelab's
    schema at all: nothing recorded). Read-only; ``conn`` must not be inside a transaction.
    Raises psycopg.Error."""
    import psycopg

    with conn.transaction(force_rollback=True):
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (META_TABLE,)).fetchone()
        if not (row and row[0]):
            return None
        try:
            with conn.transaction():
                held = _schema_marks(conn)
        except psycopg.errors.InsufficientPrivilege:
            return None  # a role that may not read the mark: nothing to tell by
        if "schema" not in held:
            return None
        if held["schema"] == schema_digest() and held.get("schema_catalog") in (
            None,  # recorded by a devicelab that kept no catalog digest: the text decides
            catalog_fingerprint(conn, schema_sql()),
        ):
            return None
    return (
        "warning: this database's reference schema (view conversation_list, functions"
        " send_message, mark_as_read, search_messages, ...) is not this devicelab's: an"
        " older or newer devicelab installed it, or it was changed by hand; the checks"
        " measure it as it is. To install this version's: devicelab backend serve --dsn DSN"
        " re-installs it and keeps the data (stop it once it prints its keys), devicelab"
        " backend datagen --dsn DSN --allow-writes makes a new data set with it"
    )


def ensure_data(
    conn: psycopg.Connection[Any], *, managed: bool, allow_writes: bool, seed_messages: int
) -> None:
    """Make sure ``backend check`` has data to check: seed an empty database with
    ``seed_messages`` generated messages, always on the managed cluster (it is ours), on a
    given database only with ``allow_writes``; on the managed cluster also bring the
    schema up to this devicelab's (:func:`ensure_schema`) and create pg_stat_statements
    (preloaded there).

    Raises UnsafeActionRefused for an empty given database without ``allow_writes``,
    BadInput for a database whose ``messages`` hold rows but which lacks the rest of the
    reference schema (a table of the app's own by that name: nothing to check, and not
    ours to replace) or a role :func:`check_app_access` refuses, and what
    :func:`seed_if_empty` raises.
    """
    if managed:
        ensure_schema(conn)  # ours: a cluster an older devicelab made gets today's schema
    elif (behind := schema_behind(conn)) is not None:
        # Not ours to re-install without being asked: measured as it is, but said.
        _log.warning("%s", behind)
    check_app_access(conn)  # before "no messages": RLS may be what hides them
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        row = conn.execute("SELECT to_regclass('public.messages') IS NOT NULL").fetchone()
        has_schema = bool(row and row[0])
        has_data = has_messages(conn)
        missing = missing_reference(conn) if has_data else []
    if missing:
        raise BadInput(
            "the database does not hold devicelab's reference messaging schema: it has "
            f"public.messages, but no {', '.join(missing)}",
            hint="point --dsn at the app's database, or create a data set in an empty one: "
            "devicelab backend datagen --dsn DSN --messages 100000 --allow-writes",
        )
    if not has_data:
        if not (managed or allow_writes):
            what = "holds no messages" if has_schema else "has no messaging schema or data"
            raise UnsafeActionRefused(
                f"the database {what} to check; seeding it writes",
                hint="add --allow-writes to create the schema and 100K messages, or run "
                "devicelab backend datagen first",
            )
        seed_if_empty(conn, DatagenParams(messages=seed_messages), reset_statements=managed)
        check_app_access(conn)  # the roles exist now
    if managed:
        _ensure_extension(conn, "pg_stat_statements")


def _ensure_extension(conn: psycopg.Connection[Any], name: str) -> None:
    import psycopg

    try:
        with conn.transaction():
            conn.execute(f"CREATE EXTENSION IF NOT EXISTS {name}")
    except psycopg.Error:
        pass  # the checks that need it report it as unavailable
