"""The reference server's pool hands out the connection returned last, so a client's
steady requests meet a warm server session (its caches, psycopg's prepared queries),
not each connection of the pool in turn."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from conftest import ADMIN_DSN

from backend_checks.reference.db import open_pool


async def _order() -> list[int]:
    pool = await open_pool(f"{ADMIN_DSN} dbname=postgres", max_size=4)
    try:

        async def pid() -> int:
            async with pool.connection() as conn:
                return conn.info.backend_pid

        first, second, third = [await pool.getconn() for _ in range(3)]
        pids = [c.info.backend_pid for c in (first, second, third)]
        for conn in (third, first, second):  # second goes back last
            await pool.putconn(conn)
        return [pids[1], await pid(), await pid(), await pid()]
    finally:
        await pool.close()


def test_the_connection_returned_last_is_handed_out_next() -> None:
    try:
        psycopg.connect(f"{ADMIN_DSN} dbname=postgres", connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN_DSN}: {exc}")
    returned_last, *handed = asyncio.run(_order())
    # Taking turns (the pool's own order) would hand out three different sessions.
    assert handed == [returned_last] * 3
