"""Database access for requests: the pool, and a transaction run as the caller's role.

Every API request that reads or writes application data goes through
:func:`as_caller`: one transaction, ``role`` set to the JWT's role and the claims in
``request.jwt.claims`` (and ``request.jwt.claim.sub`` / ``.role``), all with
``set_config(..., true)`` so they end with the transaction. RLS then applies exactly as
under PostgREST. The server connects as a privileged user that may switch to those roles.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool

from backend_checks.reference.catalog import Catalog, load_catalog
from backend_checks.reference.context import API_ROLES, ServerContext
from backend_checks.reference.errors import ApiError, pg_error, rest_error

__all__ = [
    "RecentFirstPool",
    "as_caller",
    "current_catalog",
    "open_pool",
    "privileged",
    "reload_if_created",
]

#: A request that runs longer than this is cancelled (PostgREST deployments set one too).
STATEMENT_TIMEOUT = "15s"


class RecentFirstPool(psycopg_pool.AsyncConnectionPool):
    """A pool that hands out the connection returned last (psycopg_pool's own takes the
    one idle longest). A server session is fastest on queries it ran before: its catalog
    caches hold the tables, views, policies and functions, and psycopg prepares a query
    after its fifth run on one connection. Taking turns over every connection the pool
    ever grew to (its maximum, after a burst) made each of a client's steady requests pay that
    warm-up again: the device run's 20 conversation-list loads, one at a time, took
    10-11.5 ms at p95 in the server instead of ~7. The connections left idle are those
    the pool closes first when it shrinks (it closes from the other end)."""

    async def _get_ready_connection(self, timeout: float | None) -> Any:
        # The base class takes from the left and puts back on the right: the connection
        # put back last is moved to the left first. The others keep their order.
        if self._pool:
            self._pool.rotate(1)
        return await super()._get_ready_connection(timeout)


async def open_pool(dsn: str, *, max_size: int = 16) -> psycopg_pool.AsyncConnectionPool:
    """An opened pool over ``dsn``; raises psycopg_pool.PoolTimeout if it cannot connect."""
    pool = RecentFirstPool(
        dsn,
        min_size=min(4, max_size),  # a warm few: the first burst should not wait on connects
        max_size=max_size,
        open=False,
        # Named, as devicelab's other sessions are: pg_stat_activity tells them apart.
        kwargs={"autocommit": True, "application_name": "devicelab-reference"},
        name="devicelab-reference",
    )
    await pool.open(wait=True, timeout=15)
    return pool


def _pool(ctx: ServerContext) -> psycopg_pool.AsyncConnectionPool:
    if ctx.pool is None:
        raise rest_error(503, "PGRST000", "database pool is not open")
    return ctx.pool


#: SQLSTATE classes of a connection the server ended (57P01 admin shutdown, 57P02 crash
#: shutdown, 57P03 cannot connect now; class 08: connection exceptions).
_DEAD_STATES = ("57P", "08")


#: How long the retry on a fresh connection waits for one: a restarted database takes
#: connections again at once; a stopped one is answered 503 without the pool's full wait.
_RETRY_WAIT_S = 2.0


def _dead(exc: psycopg.Error, conn: psycopg.AsyncConnection[Any] | None) -> bool:
    """Whether ``exc`` says the connection itself is gone, not the request's SQL."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if conn is not None and (conn.closed or conn.broken):
        return True
    return exc.sqlstate is None or exc.sqlstate.startswith(_DEAD_STATES)


def _gone_error() -> ApiError:
    return rest_error(503, "PGRST000", "database connection failed")


@asynccontextmanager
async def _begun(
    conn: psycopg.AsyncConnection[Any], setup: tuple[str, tuple[Any, ...]] | None
) -> AsyncIterator[None]:
    """BEGIN, and the statement ``setup`` with its parameters, in one round trip (bound
    client-side: one simple query); COMMIT when the block ends, ROLLBACK when it raises.
    Savepoints inside (``conn.transaction()``) nest in it: psycopg asks the server whether
    a transaction is open."""
    if setup is None:
        await conn.execute("BEGIN")
    else:
        statement, params = setup
        await psycopg.AsyncClientCursor(conn).execute(f"BEGIN; {statement}", params)
    try:
        yield
    except BaseException:
        if not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error):  # the block's own error is reported
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


@asynccontextmanager
async def _transaction(
    ctx: ServerContext, setup: tuple[str, tuple[Any, ...]] | None = None
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection inside a transaction, begun together with ``setup`` (see
    :func:`_begun`). A pooled connection the server ended while it sat idle (a restart,
    ``pg_terminate_backend``, ``backend stop``) fails its BEGIN: it is dropped (the pool
    discards a broken connection), the idle ones are checked, and a fresh one is tried,
    once. Raises ApiError 503 when that fails too or the connection dies during the
    request (no traceback: a database going away is not the server's bug), 503 after the
    pool's wait when no connection can be had, and psycopg.Error of ``setup`` or of the
    request's SQL.
    """
    pool = _pool(ctx)
    for attempt in (1, 2):
        stack = AsyncExitStack()
        got: psycopg.AsyncConnection[Any] | None = None
        wait = 10.0 if attempt == 1 else _RETRY_WAIT_S
        try:
            got = conn = await stack.enter_async_context(pool.connection(timeout=wait))
            await stack.enter_async_context(_begun(conn, setup))
        except psycopg_pool.PoolTimeout as exc:
            await stack.aclose()
            raise rest_error(503, "PGRST000", "no database connection available") from exc
        except psycopg.Error as exc:
            await stack.aclose()  # returns the connection: the pool drops a broken one
            if not _dead(exc, got) and got is not None and exc.sqlstate is not None:
                raise  # the setup statement's own error (a missing role, say)
            if attempt == 1 and _dead(exc, got):
                # One ended connection says the database ended them all (a restart, a
                # stop): the idle ones are checked and the dead dropped before the retry.
                await pool.check()
                continue
            raise _gone_error() from exc
        async with stack:
            try:
                yield conn
            except psycopg.Error as exc:
                if _dead(exc, conn):
                    raise _gone_error() from exc
                raise
        return


@asynccontextmanager
async def as_caller(
    ctx: ServerContext, claims: dict[str, Any], *, read_only: bool = False
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection inside a transaction running as ``claims['role']``.

    The transaction commits when the block ends normally and rolls back on any exception.
    Raises ApiError: 503 when no connection is available (or the database went away),
    and the PostgREST translation of any PostgreSQL error raised inside the block
    (translated here, in one place).
    """
    role = str(claims.get("role", ""))
    if role not in API_ROLES:
        raise rest_error(401, "PGRST301", "JWT role is not allowed")
    # Begun with the transaction, in its round trip; SET TRANSACTION READ ONLY is the
    # setting transaction_read_only.
    setup = (
        ("SELECT set_config('transaction_read_only', 'on', true)," if read_only else "SELECT")
        + " set_config('role', %s, true),"
        " set_config('request.jwt.claims', %s, true),"
        " set_config('request.jwt.claim.sub', %s, true),"
        " set_config('request.jwt.claim.role', %s, true),"
        " set_config('statement_timeout', %s, true)",
        (role, json.dumps(claims), str(claims.get("sub", "")), role, STATEMENT_TIMEOUT),
    )
    try:
        async with _transaction(ctx, setup) as conn:
            yield conn
    except psycopg.Error as exc:
        if exc.sqlstate is None:
            # Refused by the driver before reaching the server (e.g. a NUL in a value).
            raise rest_error(400, "22P05", "value not accepted by the database") from exc
        raise pg_error(exc, role=role) from exc


@asynccontextmanager
async def privileged(ctx: ServerContext) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection as the server's own (privileged) user, in a transaction.

    Used by Auth and Storage for their own bookkeeping, never with request SQL.
    Raises ApiError 503 when the database cannot be reached or went away.
    """
    async with _transaction(ctx) as conn:
        yield conn


async def current_catalog(ctx: ServerContext, *, reload: bool = False) -> Catalog:
    """The catalog snapshot, (re)loaded when absent or when ``reload`` and it is stale.

    Raises ApiError 503 when the database cannot be read.
    """
    if ctx.catalog is None or (reload and ctx.catalog.stale()):
        try:
            async with _pool(ctx).connection(timeout=10) as conn:
                ctx.catalog = await load_catalog(conn)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise ApiError(
                503, {"code": "PGRST002", "message": "Could not query the database for the "
                      "schema cache", "details": None, "hint": None}
            ) from exc  # fmt: skip
    return ctx.catalog


_EXISTS_SQL = {
    "relation": "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n"
    " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)",
    "function": "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n"
    " ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = %s)",
}


async def reload_if_created(ctx: ServerContext, kind: str, name: str) -> Catalog:
    """The catalog, reloaded when a ``kind`` ("relation"/"function") called ``name`` now
    exists in the database though the snapshot lacks it (created after startup).

    One small bound query per miss, so unknown names cannot force full reloads.
    Raises ApiError 503 when the database cannot be read.
    """
    try:
        async with _pool(ctx).connection(timeout=10) as conn:
            row = await (await conn.execute(_EXISTS_SQL[kind], ("public", name))).fetchone()
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        raise rest_error(503, "PGRST002", "Could not query the database") from exc
    if row and row[0]:
        ctx.catalog = None
    return await current_catalog(ctx)
