"""Database access for requests: the pool, and a transaction run as the caller's role.

Every API request that reads or writes application data goes through
:func:`as_caller`: one transaction, ``role`` set to the JWT's role and the claims in
``request.jwt.claims`` (and ``request.jwt.claim.sub`` / ``.role``), all with
``set_config(..., true)`` so they end with the transaction. RLS then applies exactly as
under PostgREST. The server connects as a privileged user that may switch to those roles.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool

from backend_checks.reference.catalog import Catalog, load_catalog
from backend_checks.reference.context import API_ROLES, ServerContext
from backend_checks.reference.errors import ApiError, pg_error, rest_error

__all__ = ["as_caller", "current_catalog", "open_pool", "privileged", "reload_if_created"]

#: A request that runs longer than this is cancelled (PostgREST deployments set one too).
STATEMENT_TIMEOUT = "15s"


async def open_pool(dsn: str, *, max_size: int = 16) -> psycopg_pool.AsyncConnectionPool:
    """An opened pool over ``dsn``; raises psycopg_pool.PoolTimeout if it cannot connect."""
    pool = psycopg_pool.AsyncConnectionPool(
        dsn,
        min_size=min(4, max_size),  # a warm few: the first burst should not wait on connects
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True},
        name="devicelab-reference",
    )
    await pool.open(wait=True, timeout=15)
    return pool


def _pool(ctx: ServerContext) -> psycopg_pool.AsyncConnectionPool:
    if ctx.pool is None:
        raise rest_error(503, "PGRST000", "database pool is not open")
    return ctx.pool


@asynccontextmanager
async def as_caller(
    ctx: ServerContext, claims: dict[str, Any], *, read_only: bool = False
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection inside a transaction running as ``claims['role']``.

    The transaction commits when the block ends normally and rolls back on any exception.
    Raises ApiError: 503 when no connection is available, and the PostgREST translation
    of any PostgreSQL error raised inside the block (translated here, in one place).
    """
    role = str(claims.get("role", ""))
    if role not in API_ROLES:
        raise rest_error(401, "PGRST301", "JWT role is not allowed")
    try:
        async with _pool(ctx).connection(timeout=10) as conn, conn.transaction():
            if read_only:
                await conn.execute("SET TRANSACTION READ ONLY")
            await conn.execute(
                "SELECT set_config('role', %s, true),"
                " set_config('request.jwt.claims', %s, true),"
                " set_config('request.jwt.claim.sub', %s, true),"
                " set_config('request.jwt.claim.role', %s, true),"
                " set_config('statement_timeout', %s, true)",
                (role, json.dumps(claims), str(claims.get("sub", "")), role, STATEMENT_TIMEOUT),
            )
            yield conn
    except psycopg_pool.PoolTimeout as exc:
        raise rest_error(503, "PGRST000", "no database connection available") from exc
    except psycopg.Error as exc:
        if exc.sqlstate is None and isinstance(exc, psycopg.OperationalError):
            raise rest_error(503, "PGRST000", "database connection failed") from exc
        if exc.sqlstate is None:
            # Refused by the driver before reaching the server (e.g. a NUL in a value).
            raise rest_error(400, "22P05", "value not accepted by the database") from exc
        raise pg_error(exc, role=role) from exc


@asynccontextmanager
async def privileged(ctx: ServerContext) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection as the server's own (privileged) user, in a transaction.

    Used by Auth and Storage for their own bookkeeping, never with request SQL.
    Raises ApiError 503 when the database cannot be reached.
    """
    try:
        async with _pool(ctx).connection(timeout=10) as conn, conn.transaction():
            yield conn
    except psycopg_pool.PoolTimeout as exc:
        raise rest_error(503, "PGRST000", "no database connection available") from exc
    except psycopg.OperationalError as exc:
        if exc.sqlstate is None:
            raise rest_error(503, "PGRST000", "database connection failed") from exc
        raise


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
