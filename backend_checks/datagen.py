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

The whole run is one transaction: schema, data, indexes, ANALYZE and the
``devicelab_meta`` mark that says the rows are ours; a failure leaves nothing. Indexes and
keys of the two big tables are dropped inside that transaction and rebuilt after the
load (rebuilding sorted is several times faster than maintaining them row by row).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from backend_checks.words import WORDS
from devicelab.errors import BackendUnavailable, UnsafeActionRefused

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "META_TABLE",
    "DatagenParams",
    "DatagenReport",
    "foreign_data",
    "generate",
    "install_schema",
    "run_datagen",
    "schema_sql",
]

META_TABLE = "public.devicelab_meta"
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
)
_POOL_SIZE = 20_000
_HASH_POOL = 16


class DatagenParams(BaseModel):
    """The scale and shape of a generated data set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: int = Field(100_000, ge=0, description="messages to generate")
    users: int = Field(1_000, ge=2, description="users (auth.users + profiles)")
    conversations: int = Field(10_000, ge=1, description="conversations")
    unread: float = Field(
        10, ge=0, description="mean unread messages per conversation and participant"
    )
    group_fraction: float = Field(0.10, ge=0, le=1, description="share of group chats")
    skew: float = Field(3.0, ge=1, description="messages per conversation ~ u**skew")
    days: int = Field(90, ge=1, description="the span of message timestamps")
    seed: int = Field(1, ge=0, lt=1_000_000, description="same seed, same data")
    anchor: datetime = Field(
        datetime(2026, 1, 1, tzinfo=UTC), description="the newest possible timestamp"
    )


class DatagenReport(BaseModel):
    """What a generation did: row counts, seconds per phase, total seconds."""

    params: DatagenParams
    counts: dict[str, int]
    phases: dict[str, float]
    seconds: float

    def messages_per_s(self) -> float:
        """Messages generated per second of the whole run."""
        return self.params.messages / self.seconds if self.seconds else 0.0


def schema_sql() -> str:
    """The text of ``backend_checks/sql/schema.sql``."""
    return resources.files("backend_checks").joinpath("sql/schema.sql").read_text()


def install_schema(conn: psycopg.Connection[Any]) -> None:
    """Install (or re-install, idempotently) the reference schema in ``conn``'s current
    transaction. Raises psycopg errors."""
    conn.execute("SET LOCAL client_min_messages = warning")
    conn.execute(schema_sql())


def foreign_data(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables holding rows devicelab did not generate (empty when the database is empty or
    holds only our data). Raises psycopg errors."""
    if (
        _exists(conn, META_TABLE)
        and conn.execute(f"SELECT 1 FROM {META_TABLE} WHERE key = 'datagen'").fetchone()
    ):
        ours = set(TABLES)
    else:
        ours = set()
    found: list[str] = []
    rows = conn.execute(
        """SELECT format('%%I.%%I', n.nspname, c.relname)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p') AND NOT (n.nspname = ANY(%s))
             AND n.nspname NOT LIKE 'pg\\_%%'
           ORDER BY 1""",
        (list(_PLATFORM_SCHEMAS),),
    ).fetchall()
    candidates = [name for (name,) in rows] + (
        ["auth.users"] if _exists(conn, "auth.users") else []
    )
    for name in candidates:
        if (name in ours and name != "auth.users") or name == META_TABLE:
            continue
        if name == "auth.users":
            # Users other than the ones we generate (testuser<i>@example.com) are foreign.
            query = f"SELECT 1 FROM {name} WHERE email !~ '^testuser[0-9]+@example\\.com$' LIMIT 1"
        else:
            query = f"SELECT 1 FROM {name} LIMIT 1"
        if conn.execute(query).fetchone():
            found.append(name)
    return found


def generate(
    conn: psycopg.Connection[Any] | None,
    params: DatagenParams,
    *,
    allow_writes: bool,
    force: bool = False,
) -> DatagenReport:
    """Generate the data set of ``params`` into ``conn``'s database, in one transaction.

    Returns a DatagenReport. Raises UnsafeActionRefused (nothing written) without
    ``allow_writes``, or when the database holds rows we did not generate and ``force`` is
    not set; BackendUnavailable when the server fails mid-way (everything rolled back).
    """
    if not allow_writes:
        raise UnsafeActionRefused(
            "datagen writes a schema and test data: refused without --allow-writes",
            hint="add --allow-writes (use a scratch database)",
        )
    import psycopg

    if conn is None:
        raise TypeError("generate() needs a connection")
    started = time.perf_counter()
    phases: dict[str, float] = {}
    try:
        with conn.transaction():
            foreign = foreign_data(conn)
            if foreign and not force:
                raise UnsafeActionRefused(
                    f"the database holds rows devicelab did not generate: {', '.join(foreign)}",
                    hint="use an empty database, or --force to replace the messaging tables",
                )
            _timed(phases, "schema", lambda: _prepare(conn))
            dropped = _timed(phases, "drop_indexes", lambda: _drop_keys(conn))
            _timed(phases, "stage", lambda: _stage(conn, params))
            _timed(phases, "users", lambda: _users(conn, params))
            _timed(phases, "messages", lambda: _messages(conn, params))
            _timed(phases, "conversations", lambda: _conversations(conn))
            _timed(phases, "receipts", lambda: _receipts(conn, params))
            _timed(phases, "indexes", lambda: _restore_keys(conn, dropped))
            conn.execute("ALTER TABLE public.messages ENABLE TRIGGER messages_search_vector_trg")
            _timed(phases, "analyze", lambda: conn.execute(f"ANALYZE {', '.join(TABLES)}"))
            counts = _counts(conn)
            _mark(conn, params, counts)
    except psycopg.Error as exc:
        raise BackendUnavailable(
            f"datagen failed and was rolled back: {str(exc).strip().splitlines()[0]}",
            hint="nothing was written; check the server's log and free disk space",
        ) from exc
    return DatagenReport(
        params=params, counts=counts, phases=phases, seconds=time.perf_counter() - started
    )


def run_datagen(
    dsn: str | None, params: DatagenParams, *, allow_writes: bool, force: bool = False
) -> DatagenReport:
    """Connect to ``dsn`` (None: the managed cluster, created if needed) and
    :func:`generate`. Refuses before connecting, or creating anything, without
    ``allow_writes``. Raises UnsafeActionRefused, BackendUnavailable, ToolMissing."""
    if not allow_writes:
        generate(None, params, allow_writes=False)  # raises UnsafeActionRefused
    from backend_checks.db import connect

    if dsn is None:
        from backend_checks.managed import ManagedPostgres

        dsn = ManagedPostgres().ensure()
    with connect(dsn) as conn:
        return generate(conn, params, allow_writes=allow_writes, force=force)


# ---------------------------------------------------------------------- phases
def _timed(phases: dict[str, float], name: str, step: Any) -> Any:
    start = time.perf_counter()
    result = step()
    phases[name] = round(time.perf_counter() - start, 3)
    return result


def _exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _prepare(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET LOCAL statement_timeout = '15min'")
    conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
    conn.execute("SET LOCAL work_mem = '256MB'")
    conn.execute("SET LOCAL synchronous_commit = off")
    # JIT compiling these one-off statements costs more than it saves (~0.2-0.5 s each).
    conn.execute("SET LOCAL jit = off")
    install_schema(conn)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value jsonb)")
    # TRUNCATE gives the tables new files: on a wal_level=minimal server (the managed
    # one) the load below then skips WAL entirely.
    conn.execute(
        "TRUNCATE public.message_read_receipts, public.messages, public.conversations,"
        " public.profiles"
    )
    conn.execute("DELETE FROM auth.users WHERE email ~ '^testuser[0-9]+@example\\.com$'")
    conn.execute(f"DELETE FROM {META_TABLE} WHERE key = 'datagen'")
    conn.execute("ALTER TABLE public.messages DISABLE TRIGGER messages_search_vector_trg")


class _Dropped(BaseModel):
    keys: list[tuple[str, str, str]]  # (table, constraint, definition)
    foreign: list[tuple[str, str, str]]
    indexes: list[str]


def _drop_keys(conn: psycopg.Connection[Any]) -> _Dropped:
    """Drop the keys and indexes of the three big tables (and the foreign keys pointing at
    them); returns their definitions for :func:`_restore_keys`."""
    # conversations too: rebuilt, its GIN index gets real statistics (filled row by row
    # through the pending list, the planner would price it as a full index scan).
    big = (
        "('public.messages'::regclass, 'public.message_read_receipts'::regclass,"
        " 'public.conversations'::regclass)"
    )
    cons = conn.execute(
        f"""SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype
            FROM pg_constraint
            WHERE contype IN ('p', 'u', 'f', 'x')
              AND (conrelid IN {big} OR confrelid IN {big})
            ORDER BY contype = 'f' DESC"""  # foreign keys go first, they depend on the keys
    ).fetchall()
    indexes = conn.execute(
        f"""SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i
            WHERE indrelid IN {big}
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"""
    ).fetchall()
    for table, name, _definition, _kind in cons:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _definition in indexes:
        conn.execute(f"DROP INDEX {name}")
    return _Dropped(
        keys=[(t, n, d) for t, n, d, k in cons if k != "f"],
        foreign=[(t, n, d) for t, n, d, k in cons if k == "f"],
        indexes=[d for _n, d in indexes],
    )


def _restore_keys(conn: psycopg.Connection[Any], dropped: _Dropped) -> None:
    for table, name, definition in dropped.keys:
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for definition in dropped.indexes:
        conn.execute(definition)
    for table, name, definition in dropped.foreign:
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


class _Hash:
    """SQL expressions of deterministic pseudo-random values for a seed.

    Every constant next to these values is written ``::float8``: a bare ``1.5`` is numeric,
    and ``power(float8, numeric)`` runs in numeric arithmetic, ~10 us a call.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def h(self, expr: str, salt: int) -> str:
        return f"hashint8extended(({expr})::int8, {self.seed * 1009 + salt})"

    def u(self, expr: str, salt: int) -> str:
        """A uniform float in [0, 1)."""
        return f"(({self.h(expr, salt)} & 2147483647)::float8 / 2147483648.0)"

    def uuid(self, expr: str, salt: int) -> str:
        return (
            f"encode(int8send({self.h(expr, salt)}) || int8send({self.h(expr, salt + 1)}),"
            " 'hex')::uuid"
        )


def _stage(conn: psycopg.Connection[Any], p: DatagenParams) -> None:
    """Temporary tables the inserts join: conversations (with participants) and the
    sentence pool (with its tsvector, computed once per sentence, not per message)."""
    hs = _Hash(p.seed)
    users = p.users
    # Members are first_user + j * step (mod users): distinct as long as size * step < users.
    # Direct chats (90 %) get their two members inline; only groups need a sub-select.
    member = "mod(first_user + {j} * step, " + str(users) + ")"
    conn.execute(
        f"""CREATE TEMP TABLE _dl_conv ON COMMIT DROP AS
        SELECT c, id, type, created_at, read_point,
               CASE WHEN type = 'direct'
                    THEN ARRAY[{hs.uuid(member.format(j=0), 1)}, {hs.uuid(member.format(j=1), 1)}]
                    ELSE ARRAY(SELECT {hs.uuid(member.format(j="j"), 1)}
                               FROM generate_series(0, size - 1) j ORDER BY j)
               END AS participants
        FROM (
          SELECT *, 1 + floor(step_u * greatest(({users} - 1) / size, 1))::int AS step
          FROM (
            SELECT c, {hs.uuid("c", 100)} AS id, type, first_user, step_u,
                   CASE WHEN type = 'group' THEN least({users}, 3 + floor(size_u * 6)::int)
                        ELSE 2 END AS size,
                   created_at, read_point
            FROM (
              SELECT c,
                CASE WHEN {hs.u("c", 101)} < %(group)s THEN 'group' ELSE 'direct' END AS type,
                floor({users} * power({hs.u("c", 102)}, 1.5::float8))::int AS first_user,
                {hs.u("c", 103)} AS step_u, {hs.u("c", 104)} AS size_u,
                %(anchor)s::timestamptz - make_interval(days => %(days)s)
                  - make_interval(secs => 30 * 86400 * {hs.u("c", 105)}) AS created_at,
                %(anchor)s::timestamptz - make_interval(secs => %(days)s * 86400.0 * least(1.0,
                  2 * %(unread)s * {hs.u("c", 106)} / greatest(1e-9, %(messages)s * (
                    power((c + 1)::float8 / %(convs)s, 1 / %(skew)s::float8)
                    - power(c::float8 / %(convs)s, 1 / %(skew)s::float8))))) AS read_point
              FROM generate_series(0, %(convs)s::int - 1) c
              OFFSET 0  -- computed once per row, not inlined into every use below
            ) base
          ) sized
          OFFSET 0
        ) stepped""",
        {
            "group": p.group_fraction,
            "anchor": p.anchor,
            "days": p.days,
            "unread": p.unread,
            "messages": p.messages,
            "skew": p.skew,
            "convs": p.conversations,
        },
    )
    conn.execute("CREATE UNIQUE INDEX ON _dl_conv (c); ANALYZE _dl_conv")
    pool = _pool_size(p)
    conn.execute(
        f"""CREATE TEMP TABLE _dl_pool ON COMMIT DROP AS
        SELECT k, string_agg((%(words)s::text[])[1 + floor({len(WORDS)}
                 * power({hs.u("k * 64 + j", 201)}, 2.5::float8))::int], ' ' ORDER BY j) AS content
        FROM generate_series(0, {pool - 1}) k,
             generate_series(1, 2 + floor(14 * power({hs.u("k", 200)}, 1.5::float8))::int) j
        GROUP BY k""",
        {"words": list(WORDS)},
    )
    conn.execute(
        """ALTER TABLE _dl_pool ADD COLUMN search_vector tsvector;
        UPDATE _dl_pool SET search_vector = to_tsvector('english', content);
        CREATE UNIQUE INDEX ON _dl_pool (k); ANALYZE _dl_pool"""
    )


def _pool_size(p: DatagenParams) -> int:
    """Distinct sentences: one per 20 messages, 1,000 to 20,000 (to_tsvector runs once each)."""
    return max(1_000, min(_POOL_SIZE, p.messages // 20))


def _users(conn: psycopg.Connection[Any], p: DatagenParams) -> None:
    hs = _Hash(p.seed)
    pool = min(_HASH_POOL, p.users)
    conn.execute(
        f"""CREATE TEMP TABLE _dl_pw ON COMMIT DROP AS
        SELECT k, crypt('password123', gen_salt('bf', 4)) AS hash
        FROM generate_series(0, {pool - 1}) k"""
    )
    conn.execute(
        f"""INSERT INTO auth.users (id, aud, role, email, encrypted_password,
                                    email_confirmed_at, created_at, updated_at)
        SELECT {hs.uuid("i - 1", 1)}, 'authenticated', 'authenticated',
               'testuser' || i || '@example.com', pw.hash, %(t)s, %(t)s, %(t)s
        FROM generate_series(1, {p.users}) i JOIN _dl_pw pw ON pw.k = mod(i, {pool})""",
        {"t": p.anchor},
    )
    conn.execute(
        f"""INSERT INTO public.profiles (id, username, full_name, email, created_at, updated_at)
        SELECT {hs.uuid("i - 1", 1)}, 'testuser' || i, 'Test User ' || i,
               'testuser' || i || '@example.com', %(t)s, %(t)s
        FROM generate_series(1, {p.users}) i""",
        {"t": p.anchor},
    )


def _messages(conn: psycopg.Connection[Any], p: DatagenParams) -> None:
    hs = _Hash(p.seed)
    # The per-row draws are computed once in a sub-select (OFFSET 0 keeps the planner from
    # inlining them into every expression that uses them).
    conn.execute(
        f"""INSERT INTO public.messages (id, conversation_id, sender_id, content, type,
                                         media_url, created_at, search_vector)
        SELECT r.id, cv.id,
               cv.participants[1 + floor(r.u_sender * cardinality(cv.participants))::int],
               pool.content, r.kind,
               CASE r.kind WHEN 'image' THEN 'media/' || cv.id || '/' || r.i || '.jpg'
                           WHEN 'video' THEN 'media/' || cv.id || '/' || r.i || '.mp4' END,
               %(anchor)s::timestamptz - make_interval(secs => %(days)s * 86400.0 * r.u_time),
               pool.search_vector
        FROM (
          SELECT i, {hs.uuid("i", 310)} AS id,
                 least({p.conversations} - 1, floor({p.conversations}
                       * power({hs.u("i", 300)}, {p.skew}::float8))::int) AS c,
                 {hs.u("i", 302)} AS u_sender, {hs.u("i", 301)} AS u_time,
                 floor({_pool_size(p)} * {hs.u("i", 303)})::int AS k,
                 CASE WHEN u_kind < 0.1 THEN 'image' WHEN u_kind < 0.2 THEN 'video'
                      ELSE 'text' END AS kind
          FROM generate_series(1, {p.messages}) i,
               LATERAL (SELECT {hs.u("i", 305)} AS u_kind) kind_draw
          OFFSET 0
        ) r
        JOIN _dl_conv cv ON cv.c = r.c
        JOIN _dl_pool pool ON pool.k = r.k""",
        {"anchor": p.anchor, "days": p.days},
    )


def _conversations(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """INSERT INTO public.conversations (id, type, name, participants, created_by,
                                            created_at, updated_at, last_message_at)
        SELECT cv.id, cv.type, CASE WHEN cv.type = 'group' THEN 'Group ' || cv.c END,
               cv.participants, cv.participants[1], cv.created_at,
               coalesce(lm.last_at, cv.created_at), lm.last_at
        FROM _dl_conv cv
        LEFT JOIN (SELECT conversation_id, max(created_at) AS last_at
                   FROM public.messages GROUP BY conversation_id) lm
               ON lm.conversation_id = cv.id"""
    )


def _receipts(conn: psycopg.Connection[Any], p: DatagenParams) -> None:
    hs = _Hash(p.seed)
    delay = hs.u(f"uuid_hash_extended(m.id, {p.seed})", 400)
    conn.execute(
        f"""INSERT INTO public.message_read_receipts (message_id, user_id, read_at)
        SELECT m.id, who.user_id,
               least(%(anchor)s::timestamptz, m.created_at + make_interval(secs => 7200 * {delay}))
        FROM public.messages m
        JOIN _dl_conv cv ON cv.id = m.conversation_id
        CROSS JOIN LATERAL unnest(cv.participants) AS who(user_id)
        WHERE who.user_id <> m.sender_id AND m.created_at < cv.read_point""",
        {"anchor": p.anchor},
    )


def _counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in TABLES:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        counts[table.split(".")[-1]] = int(row[0]) if row else 0
    return counts


def _mark(conn: psycopg.Connection[Any], p: DatagenParams, counts: dict[str, int]) -> None:
    value = {
        "generator": "devicelab",
        "params": json.loads(p.model_dump_json()),
        "counts": counts,
        "generated_at": datetime.now(UTC).isoformat(),
    }
    conn.execute(
        f"INSERT INTO {META_TABLE} (key, value) VALUES ('datagen', %s)", (json.dumps(value),)
    )
