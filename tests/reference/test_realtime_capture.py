"""The reference Realtime's change capture in the database: its trigger notifies while a
server listens and costs its writers nothing otherwise."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import psycopg

from backend_checks.datagen import DatagenParams, generate
from backend_checks.reference.realtime_capture import CHANNEL, ChangeFeed
from tests.backend_checks.conftest import make_db, pg_server

__all__ = ["make_db", "pg_server"]  # fixtures, used by name

_TABLES = ("messages", "conversations", "message_read_receipts")


def _captured_db(make_db: Callable[[], str]) -> str:
    """A scratch database with generated data and the capture trigger on its tables."""
    dsn = make_db()
    capture = resources.files("backend_checks.reference").joinpath("sql/realtime.sql")
    with psycopg.connect(dsn) as conn:
        generate(conn, DatagenParams(messages=200, users=10, conversations=20), allow_writes=True)
        conn.execute(capture.read_text().encode())
        for table in _TABLES:
            conn.execute("SELECT devicelab_realtime.watch(%s::regclass)", (f"public.{table}",))
    return dsn


def _heard_after_a_write(dsn: str, listener: psycopg.Connection[Any]) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as writer:
        writer.execute(
            "UPDATE public.messages SET content = content || '!'"
            " WHERE id = (SELECT id FROM public.messages ORDER BY id LIMIT 1)"
        )
    return [json.loads(n.payload)["table"] for n in listener.notifies(timeout=1, stop_after=1)]


def _listeners(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT pid FROM devicelab_realtime.listeners")]


def test_the_trigger_notifies_only_while_a_server_is_recorded(make_db: Callable[[], str]) -> None:
    dsn = _captured_db(make_db)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        assert _heard_after_a_write(dsn, listener) == []
        listener.execute("INSERT INTO devicelab_realtime.listeners VALUES (pg_backend_pid())")
        assert _heard_after_a_write(dsn, listener) == ["messages"]


def test_a_feed_records_its_listener_while_open_and_forgets_the_dead(
    make_db: Callable[[], str],
) -> None:
    dsn = _captured_db(make_db)
    with psycopg.connect(dsn, autocommit=True) as gone:
        dead_pid = gone.info.backend_pid
        gone.execute("INSERT INTO devicelab_realtime.listeners VALUES (pg_backend_pid())")
    # A server killed without closing leaves its row; the next one to start removes it.
    assert _listeners(dsn) == [dead_pid]

    async def scenario() -> tuple[list[int], list[str], list[int]]:
        feed = ChangeFeed(dsn)
        await feed.open()
        try:
            recorded = _listeners(dsn)
            with psycopg.connect(dsn, autocommit=True) as writer:
                writer.execute(
                    "UPDATE public.conversations SET name = 'heard'"
                    " WHERE id = (SELECT id FROM public.conversations ORDER BY id LIMIT 1)"
                )
            change = await asyncio.wait_for(anext(aiter(feed.changes())), timeout=5)
        finally:
            await feed.close()
        return recorded, [change.table], _listeners(dsn)

    recorded, heard, after = asyncio.run(scenario())
    assert len(recorded) == 1 and recorded[0] != dead_pid
    assert heard == ["conversations"]
    assert after == []
