"""Realtime DELETE events of an RLS table: the old record is the primary key alone, and
filters see no more than that, so a filter on another column cannot reveal anything of
a deleted row (Supabase: DELETE events cannot be filtered). Uses the helpers and seeded
ids of test_realtime.py over the session's reference server."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import psycopg
from conftest import until
from test_realtime import changes_of, insert, subscriber

from backend_checks.reference.server import ReferenceServer


def test_a_delete_filter_on_a_non_key_column_reveals_nothing(
    server: ReferenceServer, db: psycopg.Connection[Any]
) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            foreign = insert(db, "34", 3, "secret launch code 4242")  # user 1 is not in "34"
            own = insert(db, "12", 1, "my launch code 1111")
            spies = [
                await subscriber(session, server, 1, event="DELETE", filter=flt)
                for flt in ("content=like.%launch code%", "content=is.null",
                            "sender_id=not.is.null")
            ]  # fmt: skip
            control = await subscriber(session, server, 1, event="DELETE", filter=f"id=eq.{own}")
            db.execute("DELETE FROM messages WHERE id = %s", (foreign,))
            db.execute("DELETE FROM messages WHERE id = %s", (own,))
            await until(lambda: len(changes_of(control)) == 1)
            await asyncio.sleep(0.3)  # anything leaking would have arrived by now
            leaked = [p["data"] for spy in spies for p in changes_of(spy)]
            (seen,) = [p["data"] for p in changes_of(control)]
            for sub in (*spies, control):
                await sub.close()
        assert leaked == []
        assert seen["type"] == "DELETE" and seen["old_record"] == {"id": own}

    asyncio.run(scenario())
