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


def test_changes_still_arrive_after_datagen_rebuilds_the_tables_under_a_running_server(
    make_db: Callable[[], str],
) -> None:
    """`backend datagen` swaps new tables in under the old names (new oids) while a
    `backend serve` may run; its subscribers must go on getting changes, RLS-checked."""
    import time

    import aiohttp

    from backend_checks.reference.realtime_client import Subscriber, websocket_url
    from backend_checks.reference.server import ReferenceServer

    dsn = make_db()
    params = DatagenParams(messages=300, users=10, conversations=20)
    with psycopg.connect(dsn) as conn:
        generate(conn, params, allow_writes=True)
        row = conn.execute(
            "SELECT id::text, participants[1]::text FROM conversations ORDER BY id LIMIT 1"
        ).fetchone()
    assert row is not None
    conv, user = row

    def oid() -> int:
        with psycopg.connect(dsn) as conn:
            found = conn.execute("SELECT 'public.messages'::regclass::oid::int").fetchone()
        assert found is not None
        return int(found[0])

    async def scenario(server: ReferenceServer) -> tuple[list[str], list[int]]:
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, websocket_url(server.url, server.anon_key))
            sub.keep_frames = True
            claims = {"sub": user, "role": "authenticated", "aud": "authenticated"}
            claims["exp"] = int(time.time()) + 600
            binding = {"event": "INSERT", "schema": "public", "table": "messages",
                       "filter": f"conversation_id=eq.{conv}"}  # fmt: skip
            await sub.join("rebuilt", postgres_changes=[binding],
                           access_token=server.ctx.sign(claims))  # fmt: skip
            sub.start()
            oids, seen = [], []
            for label in ("before the rebuild", "after the rebuild"):
                if label.startswith("after"):
                    with psycopg.connect(dsn) as conn:  # same seed: same users, new tables
                        generate(conn, params, allow_writes=True)
                oids.append(oid())
                with psycopg.connect(dsn, autocommit=True) as db:
                    db.execute(
                        "INSERT INTO messages (conversation_id, sender_id, content)"
                        " VALUES (%s, %s, %s)",
                        (conv, user, label),
                    )
                deadline = time.monotonic() + 5
                while len(seen) < len(oids) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    frames = [json.loads(text) for _, text in sub.frames]
                    seen = [
                        f["payload"]["data"]["record"]["content"]
                        for f in frames
                        if f["event"] == "postgres_changes"
                    ]
            await sub.close()
            return seen, oids

    with ReferenceServer(dsn) as server:
        seen, oids = asyncio.run(scenario(server))
    assert oids[0] != oids[1], "datagen did not rebuild the table: the test proves nothing"
    assert seen == ["before the rebuild", "after the rebuild"]
