"""The parallel path of the data generator: two connections, a staging schema, one swap.

One transaction can use one core: PostgreSQL 15 runs an ``INSERT ... SELECT``, a GIN
build and an ANALYZE on one backend. The data set splits into independent pieces (its
rows are hashes of row numbers, so any range of messages is computed alone; each index,
foreign key and ANALYZE is its own statement), so two connections build it on two cores.
Their work is committed as it goes, so it cannot go into the live tables; it goes into the
schema ``devicelab_stage`` instead:

1. setup (one transaction): drop any staging left by a run that died, create the staging
   schema with the reference schema's four tables (their text from ``schema.sql``, the
   keys, foreign keys and indexes of the three big ones dropped and remembered, like the
   serial path does);
2. tasks on two connections, each in its own transaction: helper tables, the messages
   (half inserted by each connection; on a wal_level=minimal server, where only the
   transaction that truncated the table skips WAL, 40 % inserted by one connection while
   the other computes the rest into an unlogged table, then copied), the conversations
   (from the messages' draws, while the messages load), receipts, then every index,
   key, foreign key and ANALYZE, scheduled by dependencies and by the locks they take
   (two statements that would wait for each other never run together), the longest
   chain first;
3. the swap (:mod:`backend_checks.datagen_swap`, one short transaction on the caller's
   connection): drop the old tables, move the staged ones into ``public``, re-run the
   schema (trigger, RLS, policies, grants, view, functions), put back the reference
   server's Realtime capture triggers where the old tables had them, insert ``auth.users``
   and its foreign key, mark, commit; tried again a second at a time while other sessions
   hold the live tables (queued, it would stall every new reader of them).

A failure anywhere rolls back the swap and drops the staging schema (and the next run,
on either path, drops a staging schema a killed run left): the live tables are untouched
until the swap commits, and are replaced in one commit. The swap refuses (and the serial
path runs instead) when dropping the old tables would lose something the schema does not
recreate: another object depending on them, or a policy, trigger, publication, grant or
owner that is not ours. The path is not taken (None: the caller runs the serial one) when
the connection is inside a transaction, no second connection can be opened, or the staging
schema cannot be created.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backend_checks.datagen import (
    LOCK_KEY,
    STAGE_SCHEMA,
    TABLES,
    DatagenParams,
    DatagenReport,
    LoadSql,
    auth_user_triggers,
    refuse_foreign,
    schema_sql,
    session_settings,
)
from backend_checks.datagen_swap import STAGED, SwapRefused, swap_when_free
from backend_checks.datagen_tasks import Run, Scheduler, Task, prioritize

if TYPE_CHECKING:
    import psycopg

__all__ = ["generate", "staging_ddl"]

log = logging.getLogger(__name__)

#: The tables whose keys and indexes are built after the load (profiles keeps its own:
#: 1,000 rows).
_BIG = ("conversations", "messages", "message_read_receipts")


def generate(
    conn: psycopg.Connection[Any], params: DatagenParams, *, force: bool, started: float
) -> DatagenReport | None:
    """Build the data set on ``conn`` and a second connection to the same database.

    Returns the report, or None when this path is not available (nothing written: the
    caller runs the serial path). Raises UnsafeActionRefused (foreign data), psycopg
    errors (everything rolled back, staging dropped).
    """
    import psycopg

    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return None  # our commits would commit the caller's transaction
    with conn.transaction():
        refuse_foreign(conn, force=force)
        triggers = auth_user_triggers(conn)
        minimal = _skips_wal(conn)
    if triggers:
        # The swap inserts the users after the generated profiles are in place: a trigger
        # making profiles of its own would collide with them (see datagen_serial).
        log.info("datagen: auth.users has triggers (%s); one transaction", ", ".join(triggers))
        return None
    other = _second_connection(conn)
    if other is None:
        return None
    phases: dict[str, float] = {}
    counts: dict[str, int] = {}
    try:
        with conn.transaction():
            session_settings(conn)  # the statement timeout of the wait for another run
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            start = time.perf_counter()
            try:
                dropped = _setup(conn)
            except psycopg.errors.InsufficientPrivilege:
                log.info("datagen: cannot create the staging schema; one transaction instead")
                return None
            phases["setup"] = round(time.perf_counter() - start, 3)
            tasks = _tasks(params, dropped, counts, minimal=minimal)
            start = time.perf_counter()
            task_times = Scheduler(tasks, [conn, other]).run()
            phases["parallel"] = round(time.perf_counter() - start, 3)
            start = time.perf_counter()
            try:
                swap_when_free(conn, params, force=force, external=dropped.external,
                               counts=counts)  # fmt: skip
            except SwapRefused as exc:
                log.info("datagen: %s; one transaction instead", exc)
                return None
            phases["swap"] = round(time.perf_counter() - start, 3)
            phases.update({f"task {k}": v for k, v in task_times.items()})
        finally:
            _drop_stage(conn)
            _unlock(conn)
    finally:
        other.close()
    return DatagenReport(
        params=params,
        counts={t.split(".")[-1]: counts[t.split(".")[-1]] for t in TABLES},
        phases=phases,
        seconds=time.perf_counter() - started,
        mode="parallel",
    )


def _unlock(conn: psycopg.Connection[Any]) -> None:
    import psycopg

    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    except psycopg.Error as exc:  # a broken connection: its locks went with it
        log.warning("datagen: could not release the advisory lock: %s", exc)


def _skips_wal(conn: psycopg.Connection[Any]) -> bool:
    """Whether a table truncated in the loading transaction is written without WAL
    (wal_level minimal, the managed cluster's)."""
    row = conn.execute("SELECT current_setting('wal_level') = 'minimal'").fetchone()
    return bool(row and row[0])


def _second_connection(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any] | None:
    """Another connection to ``conn``'s database as its user, or None."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    password = conn.info.password
    dsn = make_conninfo(conn.info.dsn, password=password) if password else conn.info.dsn
    try:
        return psycopg.connect(dsn, connect_timeout=10, application_name="devicelab")
    except psycopg.Error as exc:
        log.info("datagen: no second connection (%s); one transaction instead", exc)
        return None


# ---------------------------------------------------------------------- setup
@dataclass
class _Dropped:
    keys: list[tuple[str, str, str, str]]  # (table, constraint, kind, index definition)
    foreign: list[tuple[str, str, str, str]]  # (table, constraint, referenced, definition)
    indexes: list[tuple[str, str, str]]  # (table, index, definition)
    external: list[tuple[str, str]]  # (table, ADD FOREIGN KEY ... to a non-public table)


def staging_ddl() -> tuple[list[str], list[tuple[str, str]]]:
    """Returns the CREATE TABLE / CREATE INDEX statements of ``schema.sql``'s four tables,
    in the staging schema, and the foreign keys to tables outside ``public`` (auth.users)
    they leave out (added at the swap, once the users exist): (table, ADD FOREIGN KEY ...).
    Raises RuntimeError when schema.sql yields fewer statements than there are staged
    tables (its CREATE TABLE text no longer matches what this reads)."""
    text = schema_sql()
    statements: list[str] = []
    external: list[tuple[str, str]] = []
    for match in re.finditer(r"CREATE TABLE IF NOT EXISTS public\.(\w+) \((.*?)\n\);", text, re.S):
        table, body = match.groups()
        if table not in STAGED:
            continue
        lines = []
        for line in body.splitlines():
            ref = re.search(
                r"\s+REFERENCES (?!public\.)(\w+\.\w+) \((\w+)\)((?: ON (?:DELETE|UPDATE)"
                r" (?:CASCADE|RESTRICT|NO ACTION|SET NULL|SET DEFAULT))*)",
                line,
            )
            if ref:
                column = line.split()[0]
                external.append(
                    (table, f"ADD FOREIGN KEY ({column}) REFERENCES {ref[1]} ({ref[2]}){ref[3]}")
                )
                lines.append(line[: ref.start()] + line[ref.end() :])
            else:
                lines.append(line)
        body = "\n".join(lines).replace("public.", f"{STAGE_SCHEMA}.")
        statements.append(f"CREATE TABLE {STAGE_SCHEMA}.{table} ({body}\n)")
    for match in re.finditer(
        r"CREATE INDEX IF NOT EXISTS (\w+)\s+ON public\.(\w+) (.*?);", text, re.S
    ):
        name, table, rest = match.groups()
        if table in STAGED:
            statements.append(f"CREATE INDEX {name} ON {STAGE_SCHEMA}.{table} {rest}")
    if len(statements) < len(STAGED):
        raise RuntimeError("schema.sql: the staging path did not find the four tables")
    return statements, external


def _setup(conn: psycopg.Connection[Any]) -> _Dropped:
    """Create the staging schema and tables; drop (and return) the keys, foreign keys and
    indexes of the big ones (partial indexes stay, as on the serial path)."""
    statements, external = staging_ddl()
    with conn.transaction():
        session_settings(conn)
        conn.execute(f"DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {STAGE_SCHEMA}")
        for statement in statements:
            conn.execute(statement)
        big = [f"{STAGE_SCHEMA}.{t}" for t in _BIG]
        cons = conn.execute(
            """SELECT conrelid::regclass::text, conname, contype, confrelid::regclass::text,
                      pg_get_constraintdef(oid),
                      CASE WHEN conindid <> 0 THEN pg_get_indexdef(conindid) END
               FROM pg_constraint
               WHERE contype IN ('p', 'u', 'f', 'x')
                 AND (conrelid = ANY(%(big)s::regclass[]) OR confrelid = ANY(%(big)s::regclass[]))
               ORDER BY contype = 'f' DESC""",
            {"big": big},
        ).fetchall()
        indexes = conn.execute(
            """SELECT indrelid::regclass::text, indexrelid::regclass::text,
                      pg_get_indexdef(indexrelid)
               FROM pg_index i
               WHERE indrelid = ANY(%s::regclass[]) AND indpred IS NULL
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)""",
            (big,),
        ).fetchall()
        for table, name, *_ in cons:
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for _table, name, _definition in indexes:
            conn.execute(f"DROP INDEX {name}")
    return _Dropped(
        keys=[(t, n, k, idx) for t, n, k, _r, d, idx in cons if k != "f"],
        foreign=[(t, n, r, d) for t, n, k, r, d, _idx in cons if k == "f"],
        indexes=[tuple(row) for row in indexes],
        external=external,
    )


def _drop_stage(conn: psycopg.Connection[Any]) -> None:
    """Drop the staging schema (best effort: the next run drops what is left)."""
    import psycopg

    try:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        with conn.transaction():
            conn.execute(f"DROP SCHEMA IF EXISTS {STAGE_SCHEMA} CASCADE")
    except psycopg.Error as exc:
        log.warning("datagen: could not drop %s: %s", STAGE_SCHEMA, exc)


# ---------------------------------------------------------------------- tasks
def _run(*statements: tuple[str, dict[str, Any]]) -> Run:
    def go(conn: psycopg.Connection[Any], _wait: Callable[[str], None]) -> None:
        for statement, params in statements:
            conn.execute(statement, params or None)

    return go


def _fill(table: str, statement: tuple[str, dict[str, Any]], counts: dict[str, int]) -> Run:
    """TRUNCATE ``table``, run ``statement`` (its INSERT), count what it inserted."""

    def go(conn: psycopg.Connection[Any], _wait: Callable[[str], None]) -> None:
        # TRUNCATE first: the table gets a new file in the loading transaction, so on a
        # wal_level=minimal server the load writes no WAL (as on the serial path).
        conn.execute(f"TRUNCATE {table}")
        # The staged table holds only these rows: the count a count(*) would read again.
        query, values = statement
        counts[table.rsplit(".", maxsplit=1)[-1]] = conn.execute(query, values or None).rowcount

    return go


def _tasks(
    p: DatagenParams, dropped: _Dropped, counts: dict[str, int], *, minimal: bool
) -> list[Task]:
    """The work between setup and swap, with dependencies, locks and relative costs
    (milliseconds, measured at 100K messages and scaled; only their ratios matter)."""
    n = max(p.messages, 1_000) / 100_000
    tasks = _load_tasks(p, n, counts, minimal=minimal)
    tasks += _build_tasks(dropped, n, tasks)
    prioritize(tasks)
    for task in tasks:
        # Catalog-only steps that lock whole tables for a moment: at the first chance.
        if task.name.startswith(("key ", "foreign key ")):
            task.priority += 1e9
    by_name = {t.name: t for t in tasks}
    # "messages" waits for it half-way (or runs beside it): it goes next, on the other
    # connection.
    by_name["messages, second part"].priority = by_name["messages"].priority - 0.5
    return tasks


def _filled_by(tasks: list[Task], table: str) -> set[str]:
    """The names of the tasks that write ``table``."""
    return {t.name for t in tasks if t.locks.get(table) in ("w", "x")}


def _load_tasks(p: DatagenParams, n: float, counts: dict[str, int], *, minimal: bool) -> list[Task]:
    s = STAGE_SCHEMA
    sql = LoadSql(p, data=s, helper=s)
    prof, conv, msgs, rcpt = (f"{s}.{t}" for t in STAGED)
    messages = _messages_unlogged if minimal else _messages_direct
    tasks = [
        Task("pool", _run(*sql.pool_stage()), 60 * min(n, 4)),  # its size stops at 400K
        Task("conversations stage", _run(*sql.conversations_stage()), 40),
        # Apart from the stage: whichever connection is done first with the two helper
        # tables the messages need fills the wait for the other one with it.
        Task("profiles", _fill(prof, sql.profiles(), counts), 10, locks={prof: "x"}),
        *messages(p, n, counts, sql),
    ]
    loaded = _filled_by(tasks, msgs)
    return [
        *tasks,
        Task(
            "receipts", _fill(rcpt, sql.receipts(), counts), 90 * n, loaded, {msgs: "r", rcpt: "x"}
        ),
        # From the messages' draws, not their table (see LoadSql.conversations), so it
        # fills the other connection's wait for the end of the messages load. After the
        # second part, which that load waits for: not a dependency of its data.
        Task(
            "conversations",
            _fill(conv, sql.conversations(), counts),
            40 * n,
            {"conversations stage", "messages, second part"},
            {conv: "x"},
        ),
    ]


#: What the messages need first: the sentence pool and the conversations.
_STAGES = frozenset({"pool", "conversations stage"})


def _messages_direct(
    p: DatagenParams, n: float, counts: dict[str, int], sql: LoadSql
) -> list[Task]:
    """Where every insert writes WAL anyway (wal_level replica or logical): the two
    connections insert half of the messages each into the staged table (nothing gained
    by the unlogged path's copy there, which cost 60 % of the rows inserted twice and the
    other connection waiting meanwhile)."""
    msgs = f"{STAGE_SCHEMA}.messages"
    half = p.messages // 2
    lock = threading.Lock()

    def insert(first: int, last: int) -> Run:
        def go(conn: psycopg.Connection[Any], _wait: Callable[[str], None]) -> None:
            inserted = conn.execute(*sql.messages(first, last)).rowcount
            with lock:
                counts["messages"] = counts.get("messages", 0) + inserted

        return go

    return [
        Task("messages", insert(1, half), 150 * n, set(_STAGES), {msgs: "w"}),
        Task(
            "messages, second part",
            insert(half + 1, p.messages),
            150 * n,
            set(_STAGES),
            {msgs: "w"},
        ),
    ]


def _messages_unlogged(
    p: DatagenParams, n: float, counts: dict[str, int], sql: LoadSql
) -> list[Task]:
    """Where a table truncated in the loading transaction writes no WAL (wal_level
    minimal): one transaction inserts every message; the other connection computes 60 %
    of them into an unlogged table meanwhile, copied at the end."""
    s = STAGE_SCHEMA
    msgs = f"{s}.messages"
    # Inserting copied rows costs ~30 % of computing them: this connection computes 40 %
    # and copies the other 60 % in about the time the other one computes them.
    first = p.messages * 2 // 5
    second = sql.message_rows(first + 1, p.messages)

    def load_messages(conn: psycopg.Connection[Any], wait: Callable[[str], None]) -> None:
        conn.execute(f"TRUNCATE {msgs}")
        start = time.perf_counter()
        inserted = conn.execute(*sql.messages(1, first)).rowcount
        computed = time.perf_counter()
        wait("messages, second part")
        waited = time.perf_counter()
        columns = LoadSql.MESSAGE_COLUMNS
        copy = f"INSERT INTO {msgs} ({columns}) SELECT {columns} FROM {s}._dl_half"
        counts["messages"] = inserted + conn.execute(copy).rowcount
        log.debug(
            "datagen: messages: first part %.3f s, waited %.3f s, copy %.3f s",
            computed - start,
            waited - computed,
            time.perf_counter() - waited,
        )

    # The messages load is the head of the longest chain: the other connection computes
    # the second part meanwhile (into an unlogged table), this one inserts the first
    # part, then copies the second.
    return [
        Task("messages", load_messages, 140 * n, set(_STAGES), {msgs: "x"}),
        Task(
            "messages, second part",
            _run((f"CREATE UNLOGGED TABLE {s}._dl_half AS {second[0]}", second[1])),
            130 * n,
            set(_STAGES),
        ),
    ]


def _build_tasks(dropped: _Dropped, n: float, load: list[Task]) -> list[Task]:
    """Indexes, keys, foreign keys and ANALYZE of the staged tables (``load``: the tasks
    that fill them)."""
    prof, conv, msgs, rcpt = (f"{STAGE_SCHEMA}.{t}" for t in STAGED)
    loaded = {table: _filled_by(load, table) for table in (prof, conv, msgs, rcpt)}
    # Index builds per table: a B-tree, and how much more a GIN costs.
    weights = {msgs: 50.0 * n, rcpt: 30.0 * n, conv: 5.0, prof: 1.0}

    def index(table: str, name: str, definition: str) -> Task:
        weight = weights[table] * (1.6 if " gin " in definition else 1)
        return Task(f"index {name}", _run((definition, {})), weight, loaded[table], {table: "s"})

    tasks = []
    for table, name, kind, definition in dropped.keys:
        constraint = "PRIMARY KEY" if kind == "p" else "UNIQUE"
        attach = f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {constraint} USING INDEX "{name}"'
        tasks += [
            index(table, name, definition),
            Task(f"key {name}", _run((attach, {})), 1, {f"index {name}"}, {table: "x"}),
        ]
    tasks += [index(table, name, definition) for table, name, definition in dropped.indexes]
    built = {t: {x.name for x in tasks if x.locks == {t: "s"}} for t in weights}
    # A foreign key needs a unique index on the referenced columns, not yet the constraint
    # (attached later, when nothing else uses its table: it locks the table whole).
    key_of = {table: f"index {name}" for table, name, kind, _d in dropped.keys if kind == "p"}
    for table, name, referenced, definition in dropped.foreign:
        deps = loaded[table] | loaded[referenced]
        deps |= {key_of[referenced]} if referenced in key_of else set()
        # Added NOT VALID (a moment's lock on both tables), then validated: VALIDATE
        # locks the referencing table against index builds and ANALYZE only, and the
        # referenced one not at all (RowShare), so the big checks overlap other work.
        # After the referencing table's index builds: the check's plan may use one, and
        # they exclude each other anyway.
        add = f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition} NOT VALID'
        validate = f'ALTER TABLE {table} VALIDATE CONSTRAINT "{name}"'
        tasks += [
            Task(f"foreign key {name}", _run((add, {})), 1, deps, {table: "f", referenced: "f"}),
            Task(
                f"validate {name}",
                _run((validate, {})),
                weights[table] * 0.6,  # a scan of the referencing table and a hash probe
                {f"foreign key {name}"} | built[table],
                {referenced: "r", table: "a"},
            ),
        ]

    # ANALYZE reads a sample of 30,000 rows: its cost grows slower than the table.
    for table, weight in ((msgs, 100 + 35 * n), (rcpt, 30 + 10 * n), (conv, 20.0), (prof, 2.0)):
        run = _run((f"ANALYZE {table}", {}))
        tasks.append(Task(f"analyze {table}", run, weight, loaded[table], {table: "a"}))
    return tasks
