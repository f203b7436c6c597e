"""Change capture and the database side of Realtime: catalog, triggers, RLS checks.

Lifecycle: ``await ChangeFeed.open(dsn)`` installs ``sql/realtime.sql`` (idempotent),
opens three connections (LISTEN, catalog, row checks), starts listening and yields
:class:`Change` objects from :meth:`ChangeFeed.changes` in commit order;
``await feed.close()`` ends it. How changes are captured and why is in docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from backend_checks.reference.realtime_auth import read_rights, write_rights
from devicelab.errors import BackendUnavailable

__all__ = ["DEFAULT_TABLES", "Change", "ChangeFeed", "RoleInfo", "TableInfo"]

log = logging.getLogger(__name__)

CHANNEL: Final = "devicelab_realtime"
#: Tables watched from the start: the app's realtime tables (others are watched on demand).
DEFAULT_TABLES: Final = (
    ("public", "messages"),
    ("public", "conversations"),
    ("public", "message_read_receipts"),
)
_SYSTEM_SCHEMAS: Final = frozenset({"pg_catalog", "information_schema", "devicelab_realtime"})


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What fan-out needs to know of a table, read from the catalog once."""

    oid: int
    schema: str
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, pg_type name) in attnum order
    primary_key: tuple[str, ...]
    rls_enabled: bool
    replica_identity_full: bool
    column_types: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def qualified(self) -> str:
        """schema.table, quoted for SQL."""
        return f'"{self.schema}"."{self.name}"'


@dataclass(frozen=True, slots=True)
class RoleInfo:
    """Whether a JWT's role is a database role, and whether RLS applies to it."""

    exists: bool
    bypass_rls: bool


@dataclass(frozen=True, slots=True)
class Change:
    """One row change, as the trigger saw it."""

    schema: str
    table: str
    type: str  # INSERT | UPDATE | DELETE
    commit_timestamp: str
    record: dict[str, Any] | None
    old_record: dict[str, Any] | None
    size: int  # bytes of the change's JSON text
    relid: int | None = None  # the table's oid when the change was written


def _install_sql() -> str:
    return resources.files("backend_checks.reference").joinpath("sql/realtime.sql").read_text()


class ChangeFeed:
    """Trigger + LISTEN/NOTIFY change feed over one PostgreSQL database.

    Three connections: ``listen`` only receives notifications; ``catalog`` answers joins
    (table lookups, trigger installs, privileges) under a lock; ``rows`` serves the single
    fan-out task (spilled changes, RLS checks), so a slow join never delays delivery.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._listen: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._catalog: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._rows: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._catalog_lock = asyncio.Lock()
        self._tables: dict[tuple[str, str], TableInfo | None] = {}
        self._watched: set[int] = set()
        self._roles: dict[str, RoleInfo] = {}
        self._selectable: dict[tuple[str, int], frozenset[str]] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def _connect(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        try:
            return await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, row_factory=tuple_row, application_name="realtime"
            )
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(
                f"Realtime cannot connect to PostgreSQL: {exc}".splitlines()[0],
                hint="check that the database of the reference server is running",
            ) from exc

    async def open(self) -> None:
        """Install the capture SQL, connect and start listening.

        Raises BackendUnavailable when the database cannot be reached.
        """
        self._catalog = await self._connect()
        async with self._catalog.transaction():
            await self._catalog.execute("select pg_advisory_xact_lock(hashtext('devicelab_rt'))")
            await self._catalog.execute(_install_sql().encode())
        # Spilled changes that no server picked up (it was down) are stale.
        await self._catalog.execute(
            "delete from devicelab_realtime.spill where created_at < now() - interval '1 minute'"
        )
        self._rows = await self._connect()
        self._listen = await self._connect()
        await self._listen.execute(f"listen {CHANNEL}")
        await self._register()
        self._reader = asyncio.create_task(self._read_notifies(), name="realtime-listen")
        for schema, name in DEFAULT_TABLES:
            table = await self.table(schema, name)
            if table is not None:
                await self.watch(table)
        await self._watch_broadcasts()

    async def _watch_broadcasts(self) -> None:
        """Hear the rows inserted into realtime.messages (broadcast from the database) and
        drop those older than Supabase keeps (3 days). A database where that table is not
        ours to watch (no privilege) goes without it, logged."""
        assert self._catalog is not None
        try:
            table = await self.table("realtime", "messages")
            if table is None:
                return
            await self.watch(table)
            async with self._catalog_lock:
                await self._catalog.execute(
                    "delete from realtime.messages where inserted_at < now() - interval '3 days'"
                )
        except psycopg.Error as exc:
            log.warning("realtime: no broadcast from the database: %s", exc)

    async def _register(self) -> None:
        """Record the LISTEN connection's backend (the capture trigger notifies only while
        a server is recorded) and forget the backends of servers that are gone."""
        assert self._listen is not None and self._catalog is not None
        async with self._catalog_lock:
            await self._catalog.execute(
                "delete from devicelab_realtime.listeners l"
                " where not exists (select from pg_stat_activity a where a.pid = l.pid)"
            )
            await self._catalog.execute(
                "insert into devicelab_realtime.listeners (pid) values (%s) on conflict do nothing",
                (self._listen.info.backend_pid,),
            )

    async def close(self) -> None:
        """Stop listening and close the connections; never raises."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._listen is not None and self._catalog is not None:
            with contextlib.suppress(Exception):
                await self._catalog.execute(
                    "delete from devicelab_realtime.listeners where pid = %s",
                    (self._listen.info.backend_pid,),
                )
        for conn in (self._listen, self._catalog, self._rows):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _read_notifies(self) -> None:
        """Queue every notification; reconnect (and LISTEN again) when the link breaks.

        Changes committed while the link is down are lost, as with any LISTEN client.
        """
        backoff = 0.1
        down = False  # said once per outage: a database gone for a minute is one line
        while True:
            try:
                assert self._listen is not None
                async for note in self._listen.notifies():
                    self._queue.put_nowait(note.payload)
                    backoff = 0.1
            except psycopg.Error as exc:
                if not down:  # psycopg's text runs over lines: the first says it
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    log.error("realtime: the LISTEN connection failed, reconnecting: %s", reason)
                down = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            try:
                self._listen = await self._connect()
                await self._listen.execute(f"listen {CHANNEL}")
                await self._register()
            except (BackendUnavailable, psycopg.Error) as exc:
                log.debug("realtime: cannot LISTEN again yet: %s", exc)
                continue
            if down:
                log.warning("realtime: listening again (changes committed meanwhile are lost)")
                down = False

    async def changes(self) -> AsyncIterator[Change]:
        """Every captured change in commit order (spilled ones fetched back whole)."""
        while True:
            text = await self._queue.get()
            try:
                body = json.loads(text)
                if "spill" in body:
                    text = await self._unspill(int(body["spill"]))
                    if not text:
                        continue
                    body = json.loads(text)
                yield Change(
                    schema=body["schema"],
                    table=body["table"],
                    type=body["type"],
                    commit_timestamp=body["commit_timestamp"],
                    record=body.get("record"),
                    old_record=body.get("old_record"),
                    size=len(text),
                    relid=body.get("relid"),
                )
            except psycopg.OperationalError as exc:
                log.error("realtime: dropped a spilled change, reconnecting: %s", exc)
                with contextlib.suppress(BackendUnavailable):
                    self._rows = await self._connect()
            except (ValueError, KeyError, psycopg.Error) as exc:
                log.error("realtime: dropped a change that could not be read: %s", exc)

    async def _unspill(self, spill_id: int) -> str:
        assert self._rows is not None
        cur = await self._rows.execute(
            "delete from devicelab_realtime.spill where id = %s returning payload::text",
            (spill_id,),
        )
        row = await cur.fetchone()
        return str(row[0]) if row else ""

    async def table(self, schema: str, name: str) -> TableInfo | None:
        """The table's catalog facts, or None when there is no such user table."""
        key = (schema, name)
        if key in self._tables:
            return self._tables[key]
        if schema in _SYSTEM_SCHEMAS:
            return None
        assert self._catalog is not None
        async with self._catalog_lock:
            cur = await self._catalog.execute(
                """
                select c.oid, c.relrowsecurity, c.relreplident = 'f',
                       array(select array[a.attname::text, t.typname::text]
                               from pg_attribute a join pg_type t on t.oid = a.atttypid
                              where a.attrelid = c.oid and a.attnum > 0
                                and not a.attisdropped order by a.attnum),
                       array(select a.attname::text from pg_index i
                               join pg_attribute a on a.attrelid = i.indrelid
                                and a.attnum = any (i.indkey)
                              where i.indrelid = c.oid and i.indisprimary order by a.attnum)
                  from pg_class c join pg_namespace n on n.oid = c.relnamespace
                 where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')
                """,
                key,
            )
            row = await cur.fetchone()
        info = None
        if row is not None:
            columns = tuple((str(c[0]), str(c[1])) for c in row[3])
            info = TableInfo(
                oid=int(row[0]),
                schema=schema,
                name=name,
                columns=columns,
                primary_key=tuple(row[4]),
                rls_enabled=bool(row[1]),
                replica_identity_full=bool(row[2]),
                column_types=dict(columns),
            )
        self._tables[key] = info
        return info

    def forget(self, schema: str, name: str) -> None:
        """Drop cached facts of a table (its columns changed); read again on next use."""
        info = self._tables.pop((schema, name), None)
        if info is not None:
            self._selectable = {k: v for k, v in self._selectable.items() if k[1] != info.oid}

    async def tables_in(self, schema: str) -> list[TableInfo]:
        """Every user table of ``schema`` (for subscriptions without a table)."""
        if schema in _SYSTEM_SCHEMAS:
            return []
        assert self._catalog is not None
        async with self._catalog_lock:
            cur = await self._catalog.execute(
                "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = %s and c.relkind in ('r', 'p') order by 1",
                (schema,),
            )
            names = [str(r[0]) for r in await cur.fetchall()]
        found = [await self.table(schema, name) for name in names]
        return [t for t in found if t is not None]

    async def watch(self, table: TableInfo) -> None:
        """Install the capture trigger on ``table`` and (re)make its visibility function.

        Once per table per server; the trigger is left alone when it is already there.
        """
        if table.oid in self._watched:
            return
        assert self._catalog is not None
        async with self._catalog_lock:
            await self._catalog.execute(
                "select devicelab_realtime.watch(%(t)s::oid::regclass),"
                " devicelab_realtime.install_visibility(%(t)s::oid::regclass)",
                {"t": table.oid},
            )
        self._watched.add(table.oid)

    async def role(self, name: str) -> RoleInfo:
        """Whether ``name`` is a role and bypasses RLS (superusers do too)."""
        if name in self._roles:
            return self._roles[name]
        assert self._catalog is not None
        async with self._catalog_lock:
            cur = await self._catalog.execute(
                "select rolbypassrls or rolsuper from pg_roles where rolname = %s", (name,)
            )
            row = await cur.fetchone()
        info = RoleInfo(exists=row is not None, bypass_rls=bool(row and row[0]))
        self._roles[name] = info
        return info

    async def channel_rights(
        self, topic: str, role: str, claims_json: str, *, write: bool
    ) -> tuple[bool, bool]:
        """(broadcast, presence) read rights, or with ``write`` write rights, of a user on
        private channel ``topic`` (see :mod:`backend_checks.reference.realtime_auth`).

        Raises PolicyError.
        """
        assert self._catalog is not None
        check = write_rights if write else read_rights
        async with self._catalog_lock:
            return await check(self._catalog, topic, role, claims_json)

    async def replay(self, topic: str, since_ms: int, limit: int) -> list[tuple[str, Any, Any]]:
        """The newest ``limit`` private broadcasts of ``topic`` in realtime.messages
        inserted since ``since_ms`` (epoch milliseconds), oldest first, as (id, event,
        payload): what a join with ``broadcast.replay`` gets (Supabase's
        ``Realtime.Messages.replay``). inserted_at is a local timestamp, compared in the
        session's time zone. Raises psycopg.Error."""
        assert self._catalog is not None
        async with self._catalog_lock:
            cur = await self._catalog.execute(
                "select id::text, event, payload from realtime.messages"
                " where topic = %s and private and extension = 'broadcast'"
                " and inserted_at >= (to_timestamp(%s::float8 / 1000)"
                " at time zone current_setting('TimeZone'))"
                " order by inserted_at desc limit %s",
                (topic, since_ms, limit),
            )
            rows = await cur.fetchall()
        return [(str(r[0]), r[1], r[2]) for r in reversed(rows)]

    async def selectable(self, role: str, table: TableInfo) -> frozenset[str]:
        """The columns of ``table`` that ``role`` may SELECT (walrus sends only those)."""
        key = (role, table.oid)
        if key in self._selectable:
            return self._selectable[key]
        assert self._catalog is not None
        async with self._catalog_lock:
            cur = await self._catalog.execute(
                "select a.attname::text from pg_attribute a where a.attrelid = %s"
                " and a.attnum > 0 and not a.attisdropped"
                " and has_column_privilege(%s, a.attrelid, a.attnum, 'SELECT')",
                (table.oid, role),
            )
            cols = frozenset(str(r[0]) for r in await cur.fetchall())
        self._selectable[key] = cols
        return cols

    async def visible(
        self, table: TableInfo, record: dict[str, Any], principals: list[tuple[str, str]]
    ) -> list[bool]:
        """For each (role, claims JSON), whether that user may SELECT the row now.

        One round trip for all principals. A principal whose check fails is answered
        False (a row is never delivered because its check could not run); the batch is
        split to find it, so the others still get their answers.
        """
        if not principals:
            return []
        await self.watch(table)
        key = json.dumps({col: record.get(col) for col in table.primary_key})
        # Same-role principals next to each other: the lookup's plan survives between them.
        order = sorted(range(len(principals)), key=lambda i: principals[i][0])
        ordered = [principals[i] for i in order]
        # One connection on purpose: splitting 1,000 users over two backends measured
        # slower on this 2-CPU machine (the fan-out and the clients need the CPUs too).
        sorted_answers = await self._ask("_rows", table, key, ordered)
        answers = [False] * len(principals)
        for position, index in enumerate(order):
            answers[index] = sorted_answers[position]
        return answers

    async def _ask(
        self, conn_name: str, table: TableInfo, key: str, principals: list[tuple[str, str]]
    ) -> list[bool]:
        """Run the table's visibility function for ``principals`` on one connection."""
        conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = getattr(self, conn_name)
        if conn is None:
            return [False] * len(principals)
        query = sql.SQL("select {}(%s::jsonb, %s::text[], %s::text[])").format(
            sql.Identifier("devicelab_realtime", f"visible_{table.oid}")
        )
        try:
            cur = await conn.execute(
                query, (key, [p[0] for p in principals], [p[1] for p in principals])
            )
            row = await cur.fetchone()
        except psycopg.OperationalError as exc:
            # The link is gone: nobody sees this change; the next one gets a new link.
            log.error("realtime: RLS check connection lost, change withheld: %s", exc)
            with contextlib.suppress(BackendUnavailable):
                setattr(self, conn_name, await self._connect())
            return [False] * len(principals)
        except psycopg.Error as exc:
            if len(principals) == 1:
                log.error("realtime: RLS check failed, the change is withheld: %s", exc)
                return [False]
            # One principal's failure must not hide the row from the others: split.
            half = len(principals) // 2
            first = await self._ask(conn_name, table, key, principals[:half])
            return first + await self._ask(conn_name, table, key, principals[half:])
        answers = list(row[0]) if row and row[0] is not None else []
        if len(answers) != len(principals):
            return [False] * len(principals)
        return [bool(a) for a in answers]
