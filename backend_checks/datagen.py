"""The data generator: the story's test data (Task 1), set-based, deterministic, skewed.

Every row comes from ``INSERT ... SELECT`` over ``generate_series``: no row-by-row loop.
Every "random" choice is a hash of (row number, seed) with ``hashint8extended``, so one
seed gives the same ids, texts and timestamps on any server, in any plan order.

The shape of the data:
- users ``testuser<i>@example.com`` / ``password123`` (as the story's generator); bcrypt
  with cost 4 (the story's ``gen_salt('bf')`` is cost 6), and a pool of 16 hashes with
  different salts shared round-robin: each bcrypt costs ~0.9 ms even at cost 4, so 1,000
  distinct hashes would cost ~1 s, as much as the rest of a 100K-message run. Every stored
  hash is a valid bcrypt of the password, so sign-in works for every user.
- conversations: 90 % direct (2 people), 10 % groups (3-8); a few users are in many.
- messages: the conversation of message ``i`` is ``floor(C * u^skew)`` (Zipf-like): with
  the defaults the largest conversations hold 10K+ messages at 1M (the story's edge case),
  most a few dozen. Text comes from a pool of sentences built from :mod:`words` with a
  front-heavy pick, so common and rare search terms both exist; 80 % text, 10 % image,
  10 % video (the story's mix), over the 90 days before ``anchor``.
- read receipts: every other participant has read each message older than the
  conversation's read point, placed so that the newest ``unread`` messages (on average,
  0 to 2x) of each conversation are unread: a realistic badge, whatever the size of the
  conversation (the expected size of conversation ``c`` follows from the power law).

All or nothing: schema, data, indexes, ANALYZE and the ``devicelab_meta`` mark that says
the rows are ours; a failure leaves nothing. Two paths give the same rows and catalog:
by default :mod:`backend_checks.datagen_parallel` builds on two connections in a staging
schema and swaps the tables in with one short transaction; the serial path
(:mod:`backend_checks.datagen_serial`: when the parallel one is not available, or with
``parallel=False``) is one transaction on the caller's connection. Either way the keys
and indexes of the big tables are built after the load (building sorted is several times
faster than maintaining them row by row).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend_checks.datagen_sql import LoadSql
from devicelab.errors import BackendUnavailable, BadInput, DeviceLabError, UnsafeActionRefused

if TYPE_CHECKING:
    from collections.abc import Callable

    import psycopg

__all__ = [
    "META_TABLE",
    "OUR_USERS",
    "STAGE_SCHEMA",
    "DatagenParams",
    "DatagenReport",
    "LoadSql",
    "Scratch",
    "auth_user_triggers",
    "foreign_data",
    "generate",
    "install_schema",
    "mark",
    "refuse_foreign",
    "run_datagen",
    "schema_digest",
    "schema_sql",
    "scratch_state",
    "session_settings",
]

META_TABLE = "public.devicelab_meta"
#: The auth.users rows the generator makes (and may delete): testuser<i>@example.com.
OUR_USERS = "email ~ '^testuser[0-9]+@example\\.com$'"
#: Tables the generator fills, in dependency order.
TABLES = (
    "auth.users",
    "public.profiles",
    "public.conversations",
    "public.messages",
    "public.message_read_receipts",
)
#: Schemas whose rows belong to the platform (Supabase), not to the database's owner.
_PLATFORM_SCHEMAS = (
    "pg_catalog",
    "information_schema",
    "pg_toast",
    "auth",
    "storage",
    "realtime",
    "_realtime",
    "supabase_functions",
    "supabase_migrations",
    "extensions",
    "graphql",
    "graphql_public",
    "vault",
    "pgsodium",
    "pgsodium_masks",
    "net",
    "cron",
    "_analytics",
    "pgbouncer",
    "hypopg",
    # The reference server's change capture (its listeners while a `backend serve` runs,
    # the spill of big changes): ours, like Supabase's realtime schema is the platform's.
    "devicelab_realtime",
)
#: Where the parallel path builds the tables before swapping them in.
STAGE_SCHEMA = "devicelab_stage"
#: The advisory lock a run holds while it writes: two runs on one database wait in turn
#: instead of dropping each other's staging.
LOCK_KEY = 0x646C_6467  # "dldg"


class DatagenParams(BaseModel):
    """The scale and shape of a generated data set. The upper bounds keep a typo (an extra
    digit or two) from filling a shared server's disk: 100M messages is ~50 GB."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    messages: int = Field(100_000, ge=0, le=100_000_000, description="messages to generate")
    users: int = Field(1_000, ge=2, le=10_000_000, description="users (auth.users + profiles)")
    conversations: int = Field(10_000, ge=1, le=10_000_000, description="conversations")
    unread: float = Field(
        10, ge=0, le=1_000_000, description="mean unread messages per conversation and participant"
    )
    group_fraction: float = Field(0.10, ge=0, le=1, description="share of group chats")
    skew: float = Field(3.0, ge=1, le=100, description="messages per conversation ~ u**skew")
    days: int = Field(90, ge=1, le=36_500, description="the span of message timestamps")
    seed: int = Field(1, ge=0, lt=1_000_000, description="same seed, same data")
    anchor: datetime = Field(
        datetime(2026, 1, 1, tzinfo=UTC), description="the newest possible timestamp"
    )

    @classmethod
    def from_options(cls, **options: Any) -> DatagenParams:
        """The parameters from command-line options (named as the fields).

        Returns them. Raises BadInput naming the option and its bound (one line, exit 2)
        before anything connects."""
        try:
            return cls(**options)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]
            field = str(problem["loc"][0]).replace("_", "-")
            message = str(problem["msg"]).removeprefix("Value error, ")
            given = options.get(str(problem["loc"][0]))
            raise BadInput(
                f"--{field} {given}: {message[0].lower()}{message[1:]}",
                hint=f"see 'devicelab backend datagen --help' for --{field}",
            ) from None


class DatagenReport(BaseModel):
    """What a generation did: row counts, seconds per phase, total seconds, the path.

    Phases of the serial path follow each other; the parallel path's are ``setup``,
    ``parallel`` (the tasks on two connections), ``swap``, then each task's own time
    (``task ...``: they overlap)."""

    params: DatagenParams
    counts: dict[str, int]
    phases: dict[str, float]
    seconds: float
    mode: str = Field("serial", description="parallel (two connections) or serial")
    created_database: str | None = Field(None, description="the database, when we created it")

    def messages_per_s(self) -> float:
        """Messages generated per second of the whole run."""
        return self.params.messages / self.seconds if self.seconds else 0.0


def schema_sql() -> str:
    """The text of ``backend_checks/sql/schema.sql``."""
    return resources.files("backend_checks").joinpath("sql/schema.sql").read_text()


def schema_digest() -> str:
    """A short digest of ``schema.sql``: which devicelab's schema a database holds."""
    return hashlib.sha256(schema_sql().encode()).hexdigest()[:16]


def install_schema(conn: psycopg.Connection[Any]) -> None:
    """Install (or re-install, idempotently) the reference schema in ``conn``'s current
    transaction, and record its digest in ``devicelab_meta`` (key ``schema``) and the
    catalog's text of its views and functions (``schema_catalog``: see
    :mod:`backend_checks.schema_catalog`). Raises psycopg errors."""
    from backend_checks.schema_catalog import catalog_fingerprint

    conn.execute("SET LOCAL client_min_messages = warning")
    text = schema_sql()
    conn.execute(text)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value jsonb)")
    conn.execute(
        f"INSERT INTO {META_TABLE} (key, value) VALUES ('schema', to_jsonb(%s::text)),"
        " ('schema_catalog', to_jsonb(%s::text))"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (schema_digest(), catalog_fingerprint(conn, text)),
    )


def foreign_data(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables holding rows devicelab did not generate (empty when the database is empty or
    holds only our data). Raises psycopg errors."""
    ours = set(TABLES) if _marked(conn) else set()
    found: list[str] = []
    rows = conn.execute(
        """SELECT format('%%I.%%I', n.nspname, c.relname)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p') AND NOT (n.nspname = ANY(%s))
             AND n.nspname NOT LIKE 'pg\\_%%'
           ORDER BY 1""",
        ([*_PLATFORM_SCHEMAS, STAGE_SCHEMA],),
    ).fetchall()
    candidates = [name for (name,) in rows] + (
        ["auth.users"] if _exists(conn, "auth.users") else []
    )
    for name in candidates:
        if (name in ours and name != "auth.users") or name == META_TABLE:
            continue
        if name == "auth.users":
            # Users other than the ones we generate (testuser<i>@example.com) are foreign.
            query = f"SELECT 1 FROM {name} WHERE NOT ({OUR_USERS}) LIMIT 1"
        else:
            query = f"SELECT 1 FROM {name} LIMIT 1"
        if conn.execute(query).fetchone():
            found.append(name)
        elif _hidden_rows(conn, name):
            found.append(f"{name} (its rows hidden from this role by row-level security)")
    return found


def _hidden_rows(conn: psycopg.Connection[Any], name: str) -> bool:
    """True when row-level security applies to us on ``name`` and its statistics say it
    holds rows: a probe through the policies sees nothing, whatever the table holds (a
    table owner under FORCE ROW LEVEL SECURITY passed as empty, and the serial path
    truncated a full table before an insert failed). reltuples -1 (never analyzed, as
    every new table) says nothing; the live-tuple count covers one filled since."""
    row = conn.execute(
        """SELECT row_security_active(c.oid)
                  AND (c.reltuples > 0 OR coalesce(s.n_live_tup, 0) > 0)
           FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
           WHERE c.oid = %s::regclass""",
        (name,),
    ).fetchone()
    return bool(row and row[0])


def _marked(conn: psycopg.Connection[Any]) -> bool:
    """True when a run of ours left its mark (the data set is ours)."""
    return _exists(conn, META_TABLE) and bool(
        conn.execute(f"SELECT 1 FROM {META_TABLE} WHERE key = 'datagen'").fetchone()
    )


class Scratch(NamedTuple):
    """What :func:`scratch_state` found: ``ours`` (only a data set of ``backend datagen``),
    or, when the role may not read what tells, ``unknown`` (the denial) and ``grant`` (the
    statement that lets it)."""

    ours: bool
    unknown: str = ""
    grant: str = ""


def scratch_state(dsn: str) -> Scratch:
    """Whether the database of ``dsn`` holds only a data set of ``backend datagen`` and no
    rows of anyone else (a scratch database someone built for us, where the load's writing
    mix needs no --allow-writes: what it adds stays ours), and when the role may not tell
    (a hosted project's role without SELECT on devicelab_meta), why and the GRANT that
    fixes it; what cannot be told is not ours. Read-only.

    Returns a Scratch. Raises BackendUnavailable (cannot connect, the server went away),
    ProbeFailed (another database error)."""
    import psycopg

    from backend_checks.db import connect, translate

    with connect(dsn) as conn:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION READ ONLY")
                return Scratch(ours=_marked(conn) and not foreign_data(conn))
        except psycopg.errors.InsufficientPrivilege as exc:
            said = exc.diag.message_primary or "permission denied"
            return Scratch(ours=False, unknown=said, grant=_grant(said, conn.info.user))
        except psycopg.Error as exc:
            raise translate(exc, dsn, "reading whether the data set is ours") from exc


def _grant(denied: str, role: str) -> str:
    """The GRANT that lets ``role`` read what ``denied`` (a permission error) names."""
    found = re.search(r"permission denied for (table|schema) (\S+)", denied)
    if found is None:
        return f"GRANT SELECT ON {META_TABLE} (and the app's tables) TO {role}"
    kind, name = found.groups()
    if kind == "schema":
        return f"GRANT USAGE ON SCHEMA {name} TO {role}"
    return f"GRANT SELECT ON {META_TABLE if name == 'devicelab_meta' else name} TO {role}"


def generate(
    conn: psycopg.Connection[Any] | None,
    params: DatagenParams,
    *,
    allow_writes: bool,
    force: bool = False,
    parallel: bool | None = None,
    reset_statements: bool = False,
) -> DatagenReport:
    """Generate the data set of ``params`` into ``conn``'s database, all or nothing.

    ``parallel`` None or True (the default) builds on two connections when it can (see
    :mod:`backend_checks.datagen_parallel`: staging schema, one short swap transaction)
    and in one transaction on ``conn`` otherwise; False forces the one-transaction path.
    Both give the same rows and catalog for one seed; the report's ``mode`` names the
    path that ran.

    ``reset_statements`` (the managed cluster, or a database datagen itself just created):
    once the data is committed, the pg_stat_statements entries of this database are reset
    where the role may (phase ``pg_stat_statements reset``; see
    :mod:`backend_checks.statement_history`): the old data set's timings do not describe
    the new one. Not on a database we were given: on a hosted project that would wipe
    every service's statement history.

    Returns a DatagenReport. Raises UnsafeActionRefused (nothing written) without
    ``allow_writes``, or when the database holds rows we did not generate and ``force`` is
    not set; BadInput when the database refuses a statement or does not fit (SQLSTATE
    class 42: a privilege, a table of another shape); BackendUnavailable when the server
    fails mid-way (everything rolled back, staging removed).
    """
    if not allow_writes:
        raise UnsafeActionRefused(
            "datagen writes a schema and test data: refused without --allow-writes",
            hint="add --allow-writes (use a scratch database)",
        )
    import psycopg

    if conn is None:
        raise TypeError("generate() needs a connection")
    # Loaded before the clock starts: a process's first run paid 0.06-0.3 s for these
    # imports (server_health brings the checks' models), the process's cost, once, not
    # the data set's (the CLI's other imports are not counted either).
    from backend_checks import datagen_parallel, datagen_serial
    from backend_checks.server_health import vacuum
    from backend_checks.statement_history import reset_database_statements

    started = time.perf_counter()
    try:
        report = None
        if parallel is not False:
            report = datagen_parallel.generate(conn, params, force=force, started=started)
        if report is None:
            report = datagen_serial.generate(conn, params, force=force, started=started)
    except psycopg.Error as exc:
        # A trigger or function of the database's own that failed names itself here.
        where = (exc.diag.context or "").strip().splitlines()
        state = exc.sqlstate or ""
        if state == "55P03":  # lock_not_available: the swap's patience ran out
            raise BackendUnavailable(
                "datagen gave up and rolled back: other sessions held the live tables for"
                " 15 minutes",
                hint="end them (the 'waiting for' line names their pids: SELECT"
                " pg_terminate_backend(pid)) and run datagen again",
            ) from exc
        if state.startswith("42"):  # refused, or a schema that does not fit
            raise BadInput(
                f"datagen was refused and rolled back: {str(exc).strip().splitlines()[0]}"
                + (f" (in {where[0]})" if where else ""),
                hint=_REFUSED_HINT if state == "42501" else _MISFIT_HINT,
            ) from exc
        raise BackendUnavailable(
            f"datagen failed and was rolled back: {str(exc).strip().splitlines()[0]}"
            + (f" (in {where[0]})" if where else ""),
            hint=_STAGE_LEFT_HINT
            if conn.broken or conn.closed
            else "nothing was written; check the server's log and free disk space",
        ) from exc
    # The users and the mark we replaced are dead tuples now (DELETE: auth.users may hold
    # users of others); left, ten runs of 1,000 users failed the check's bloat on
    # auth.users. Outside the caller's transaction only (VACUUM cannot run in one).
    phases = dict(report.phases)
    start = time.perf_counter()
    if vacuum(conn, ["auth.users", META_TABLE]):
        phases["vacuum"] = round(time.perf_counter() - start, 3)
    # The old data set's timings describe another data set: kept, one check on it (an
    # index dropped) failed slow_queries after every later datagen. Last, so that our
    # own VACUUM goes with them; a refusal is logged, never a datagen's failure.
    start = time.perf_counter()
    if reset_statements and reset_database_statements(conn):
        phases["pg_stat_statements reset"] = round(time.perf_counter() - start, 3)
    if phases != report.phases:
        report = report.model_copy(
            update={"phases": phases, "seconds": time.perf_counter() - started}
        )
    return report


#: The connection went with the server: the staging tables could not be dropped.
_STAGE_LEFT_HINT = (
    f"the data set was not written, but the schema {STAGE_SCHEMA} (the staging tables) may be"
    f" left: the next datagen drops it, or DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE;"
    " check the server's log and free disk space"
)


def _left_hint(name: str) -> str:
    """The hint of a failed datagen whose new database ``name`` could not be dropped."""
    return (
        f"database {name} was created for this run and left (the server did not answer the"
        f" drop), with the schema {STAGE_SCHEMA} in it if the run got that far: once the"
        f" server is back, drop it: dropdb {name} (DROP DATABASE {name})"
    )


_REFUSED_HINT = (
    "nothing was written; datagen creates the pgcrypto extension, the schema auth, the"
    " roles anon, authenticated and service_role (BYPASSRLS: a superuser's to create) and"
    " tables in public: run it as the database's owner after an admin made those"
    " (docs/backend_checks.md, 'Without superuser')"
)
_MISFIT_HINT = (
    "nothing was written; a table or function already there has another shape than"
    " devicelab's reference schema (the error names it): use an empty database"
)


def run_datagen(
    dsn: str | None,
    params: DatagenParams,
    *,
    allow_writes: bool,
    force: bool = False,
    say: Callable[[str], None] | None = None,
) -> DatagenReport:
    """Connect to ``dsn`` (None: the managed cluster, created if needed; a database the
    server lacks is created, and dropped again if the run fails) and :func:`generate`.
    ``say`` hears "created database NAME" as soon as it is made (the report names it
    too). Refuses before connecting, or creating anything, without ``allow_writes``.
    Raises UnsafeActionRefused, BackendUnavailable, ToolMissing."""
    if not allow_writes:
        generate(None, params, allow_writes=False)  # raises UnsafeActionRefused
    from backend_checks.db import connect, drop_database, ensure_database

    created = None
    managed = dsn is None
    if dsn is None:
        from backend_checks.managed import ManagedPostgres

        dsn = ManagedPostgres().ensure()
    try:
        if not managed:
            # --allow-writes covers creating the database; one that stops half-way drops
            # what it made itself (it never returns the name then).
            created = ensure_database(dsn)
            if created and say is not None:
                say(f"created database {created}")  # before the work: a stop may come later
        with connect(dsn) as conn:
            # Ours to reset: the managed cluster, or a database created just now.
            ours = created is not None or managed
            report = generate(
                conn, params, allow_writes=allow_writes, force=force, reset_statements=ours
            )
    except BaseException as exc:
        # A failed run leaves no database of ours behind either; when it must, says so.
        if created:
            if drop_database(dsn):
                if say is not None:
                    say(f"dropped database {created} again: the run did not finish")
            elif isinstance(exc, DeviceLabError):
                exc.hint = _left_hint(created)
        raise
    return report.model_copy(update={"created_database": created}) if created else report


def refuse_foreign(conn: psycopg.Connection[Any], *, force: bool) -> None:
    """Raise UnsafeActionRefused when the database holds rows we did not generate and
    ``force`` is not set."""
    foreign = foreign_data(conn)
    if foreign and not force:
        raise UnsafeActionRefused(
            f"the database holds rows devicelab did not generate: {', '.join(foreign)}",
            # Shared by `backend datagen` and `backend check` (which has no --force): the
            # hint names the whole command, so it is usable from either.
            hint="use an empty database, or replace the messaging tables: devicelab backend"
            " datagen --dsn DSN --allow-writes --force",
        )


def session_settings(conn: psycopg.Connection[Any], *, parallel: bool = True) -> None:
    """SET LOCAL the settings of a load transaction. ``parallel`` False: no parallel
    workers (when two connections already keep both cores busy)."""
    import psycopg

    settings = [
        "statement_timeout = '15min'",
        "maintenance_work_mem = '512MB'",
        "work_mem = '256MB'",
        "synchronous_commit = off",
        # JIT compiling these one-off statements costs more than it saves (~0.2-0.5 s each).
        "jit = off",
    ]
    if not parallel:
        settings += ["max_parallel_maintenance_workers = 0", "max_parallel_workers_per_gather = 0"]
    # One round trip (no parameters: the simple protocol takes several statements): every
    # task of the parallel path opens a transaction with these, ~40 of them at any size.
    conn.execute("; ".join(f"SET LOCAL {setting}" for setting in settings))
    # Our load is not the app's traffic: recorded, five datagens on one cluster made its
    # statements "slow queries" of the next check. A superuser's setting; else recorded.
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("SET LOCAL pg_stat_statements.track = 'none'")


def auth_user_triggers(conn: psycopg.Connection[Any]) -> list[str]:
    """The enabled user triggers on auth.users (a Supabase project's ``handle_new_user``,
    which makes each new user's profile), by name."""
    rows = conn.execute(
        """SELECT tgname FROM pg_trigger
           WHERE tgrelid = to_regclass('auth.users') AND NOT tgisinternal AND tgenabled <> 'D'
           ORDER BY tgname"""
    ).fetchall()
    return [str(name) for (name,) in rows]


def _exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def mark(conn: psycopg.Connection[Any], p: DatagenParams, counts: dict[str, int]) -> None:
    value = {
        "generator": "devicelab",
        "params": json.loads(p.model_dump_json()),
        "counts": counts,
        "generated_at": datetime.now(UTC).isoformat(),
    }
    conn.execute(
        f"INSERT INTO {META_TABLE} (key, value) VALUES ('datagen', %s)", (json.dumps(value),)
    )
