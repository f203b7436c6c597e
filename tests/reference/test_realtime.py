"""Realtime of the reference server, spoken to by a real websocket client over loopback.

Uses the session fixtures of tests/reference/conftest.py (``server`` over ``scratch_dsn``
with testuser1..4; testuser4 is only in conversation "34"). Inserts go straight to the
database (``db``), as any writer would; the server must notice them by itself.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
import psycopg
import pytest
from conftest import until

from backend_checks.reference.realtime_client import RealtimeRefused, Subscriber, websocket_url
from backend_checks.reference.server import ReferenceServer

# The conftest's seeded ids (kept in step with tests/reference/conftest.py).
USER = {n: f"00000000-0000-4000-8000-00000000000{n}" for n in range(1, 5)}
CONV = {k: f"10000000-0000-4000-8000-0000000000{k}" for k in ("12", "13", "23", "34")}


def token(server: ReferenceServer, n: int, *, ttl: int = 3600) -> str:
    """A user JWT for testuser<n>, signed by the server (as its /auth/v1/token would)."""
    claims = {"sub": USER[n], "role": "authenticated", "aud": "authenticated"}
    claims["exp"] = int(time.time()) + ttl
    return server.ctx.sign(claims)


def insert(db: psycopg.Connection[Any], conv: str, sender: int, content: str) -> str:
    """Insert a message as the database owner; returns its id."""
    row = db.execute(
        "INSERT INTO messages (conversation_id, sender_id, content) VALUES (%s, %s, %s)"
        " RETURNING id::text",
        (CONV[conv], USER[sender], content),
    ).fetchone()
    assert row is not None
    return str(row[0])


def changes_of(sub: Subscriber) -> list[dict[str, Any]]:
    """The payloads of the postgres_changes frames a subscriber has received."""
    frames = [json.loads(text) for _, text in sub.frames]
    return [f["payload"] for f in frames if f["event"] == "postgres_changes"]


async def subscriber(
    session: aiohttp.ClientSession, server: ReferenceServer, user: int, **binding: Any
) -> Subscriber:
    """A socket of testuser<user> joined to one postgres_changes binding, reading."""
    sub = await Subscriber.connect(session, websocket_url(server.url, server.anon_key))
    sub.keep_frames = True
    params = {"event": "*", "schema": "public", "table": "messages", **binding}
    await sub.join(f"t-{uuid.uuid4().hex[:8]}", postgres_changes=[params],
                   access_token=token(server, user))  # fmt: skip
    sub.start()
    return sub


def test_insert_arrives_in_supabase_shape(
    server: ReferenceServer, db: psycopg.Connection[Any]
) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            flt = f"conversation_id=eq.{CONV['12']}"
            sub = await subscriber(session, server, 1, event="INSERT", filter=flt)
            message_id = insert(db, "12", 1, "hello realtime")
            await until(lambda: len(changes_of(sub)) == 1)
            (payload,) = changes_of(sub)
            await sub.close()
        assert isinstance(payload["ids"], list) and all(isinstance(i, int) for i in payload["ids"])
        data = payload["data"]
        assert set(data) == {"schema", "table", "commit_timestamp", "type", "columns",
                             "record", "errors"}  # fmt: skip
        assert (data["schema"], data["table"], data["type"]) == ("public", "messages", "INSERT")
        assert data["errors"] is None
        assert data["commit_timestamp"].endswith("Z") and "T" in data["commit_timestamp"]
        assert {"name": "id", "type": "uuid"} in data["columns"]
        assert {"name": "created_at", "type": "timestamptz"} in data["columns"]
        assert data["record"]["id"] == message_id
        assert data["record"]["content"] == "hello realtime"

    asyncio.run(scenario())


def test_rls_keeps_outsider_out(server: ReferenceServer, db: psycopg.Connection[Any]) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            outsider = await subscriber(session, server, 4)  # every message, no filter
            member = await subscriber(session, server, 2)
            insert(db, "12", 1, "secret between 1 and 2")
            insert(db, "34", 3, "for user 4")
            await until(lambda: len(changes_of(member)) == 1 and len(changes_of(outsider)) == 1)
            await asyncio.sleep(0.3)  # anything leaking would have arrived by now
            seen_by_outsider = [p["data"]["record"]["content"] for p in changes_of(outsider)]
            seen_by_member = [p["data"]["record"]["content"] for p in changes_of(member)]
            await outsider.close()
            await member.close()
        assert seen_by_outsider == ["for user 4"]
        assert seen_by_member == ["secret between 1 and 2"]

    asyncio.run(scenario())


def test_row_over_8000_bytes_is_delivered_whole(
    server: ReferenceServer, db: psycopg.Connection[Any]
) -> None:
    big = "x" * 20_000

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sub = await subscriber(session, server, 1, event="INSERT")
            insert(db, "13", 1, big)
            await until(lambda: len(changes_of(sub)) == 1)
            (payload,) = changes_of(sub)
            await sub.close()
        assert payload["data"]["record"]["content"] == big
        assert payload["data"]["errors"] is None

    asyncio.run(scenario())


def test_update_and_delete_carry_identity_only(
    server: ReferenceServer, db: psycopg.Connection[Any]
) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sub = await subscriber(session, server, 2, filter=f"conversation_id=eq.{CONV['23']}")
            message_id = insert(db, "23", 2, "first")
            db.execute("UPDATE messages SET content = 'edited' WHERE id = %s", (message_id,))
            # Visibility is checked when the change is fanned out (as walrus does): an
            # update whose row is already gone by then is not shown, so wait for it.
            await until(lambda: len(changes_of(sub)) == 2)
            # A DELETE's old record is the key alone, so only a filter on the key sees it.
            by_key = await subscriber(session, server, 2, filter=f"id=eq.{message_id}")
            db.execute("DELETE FROM messages WHERE id = %s", (message_id,))
            await until(lambda: len(changes_of(by_key)) == 1)
            await asyncio.sleep(0.3)  # a DELETE reaching the conversation filter would be here
            kinds = [p["data"] for p in changes_of(sub) + changes_of(by_key)]
            await sub.close()
            await by_key.close()
        assert [d["type"] for d in kinds] == ["INSERT", "UPDATE", "DELETE"]
        update, delete = kinds[1], kinds[2]
        assert update["record"]["content"] == "edited"
        # Default replica identity: the old record is the primary key (as walrus sends it).
        assert update["old_record"] == {"id": message_id}
        assert delete["old_record"] == {"id": message_id} and "record" not in delete

    asyncio.run(scenario())


def test_heartbeat_is_answered(server: ReferenceServer) -> None:
    async def scenario() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, websocket_url(server.url, server.anon_key))
            ref = await sub.send("phoenix", "heartbeat", {})
            reply = json.loads((await sub.ws.receive(timeout=5)).data)
            await sub.close()
            assert reply["ref"] == ref
            return dict(reply)

    reply = asyncio.run(scenario())
    assert reply["topic"] == "phoenix" and reply["event"] == "phx_reply"
    assert reply["payload"] == {"status": "ok", "response": {}}


def test_broadcast_self_and_ack(server: ReferenceServer) -> None:
    async def scenario() -> None:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            talker = await Subscriber.connect(session, url)
            quiet = await Subscriber.connect(session, url)
            await talker.join("room", broadcast={"self": True, "ack": True})
            await quiet.join("room")
            for sub in (talker, quiet):
                sub.keep_frames = True
                sub.start()
            ref = await talker.send("realtime:room", "broadcast",
                                    {"type": "broadcast", "event": "ping", "payload": {"n": 1}},
                                    join_ref=talker.join_ref)  # fmt: skip

            def events(sub: Subscriber) -> list[dict[str, Any]]:
                return [json.loads(t) for _, t in sub.frames]

            await until(lambda: len(events(talker)) >= 2 and len(events(quiet)) >= 1)
            acks = [f for f in events(talker) if f["event"] == "phx_reply"]
            assert acks and acks[0]["ref"] == ref and acks[0]["payload"]["status"] == "ok"
            got = [f["payload"] for f in events(quiet) if f["event"] == "broadcast"]
            own = [f["payload"] for f in events(talker) if f["event"] == "broadcast"]
            assert got == own == [{"type": "broadcast", "event": "ping", "payload": {"n": 1}}]
            # Without self, the quiet one's own broadcast does not come back to it.
            await quiet.send("realtime:room", "broadcast",
                             {"type": "broadcast", "event": "pong", "payload": {}},
                             join_ref=quiet.join_ref)  # fmt: skip
            await until(lambda: any(f["event"] == "broadcast" and f["payload"]["event"] == "pong"
                                    for f in events(talker)))  # fmt: skip
            assert not [f for f in events(quiet) if f.get("payload", {}).get("event") == "pong"]
            await talker.close()
            await quiet.close()

    asyncio.run(scenario())


def test_bad_tokens_are_refused(server: ReferenceServer) -> None:
    async def scenario() -> None:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            with pytest.raises(RealtimeRefused, match="InvalidJWTToken"):
                await sub.join("x", access_token=token(server, 1)[:-4] + "AAAA")
            with pytest.raises(RealtimeRefused, match="InvalidJWTToken"):
                await sub.join("y", access_token=token(server, 1, ttl=-60))
            await sub.close()
            bad = websocket_url(server.url, "not-a-key")
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await Subscriber.connect(session, bad)

    asyncio.run(scenario())


def test_bad_filter_gets_a_system_error(server: ReferenceServer) -> None:
    async def scenario() -> None:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            binding = {"event": "*", "schema": "public", "table": "messages", "filter": "nope=eq.1"}
            with pytest.raises(RealtimeRefused, match="invalid column for filter nope"):
                await sub.join("f", postgres_changes=[binding], access_token=token(server, 1))
            binding = {"event": "*", "schema": "public", "table": "no_such_table"}
            with pytest.raises(RealtimeRefused, match="no table"):
                await sub.join("g", postgres_changes=[binding], access_token=token(server, 1))
            await sub.close()

    asyncio.run(scenario())


def test_filters_are_checked_against_the_column_type_and_the_role(
    server: ReferenceServer,
) -> None:
    async def scenario() -> None:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            for n, flt in enumerate(["conversation_id=eq.notauuid", "conversation_id=in.(x,y)"]):
                binding = {"event": "*", "schema": "public", "table": "messages", "filter": flt}
                with pytest.raises(RealtimeRefused, match="invalid input value"):
                    await sub.join(f"u{n}", postgres_changes=[binding],
                                   access_token=token(server, 1))  # fmt: skip
            # anon may not SELECT messages: it may not filter on their columns either.
            flt = f"conversation_id=eq.{CONV['12']}"
            binding = {"event": "*", "schema": "public", "table": "messages", "filter": flt}
            with pytest.raises(RealtimeRefused, match="invalid column for filter conversation_id"):
                await sub.join("anon", postgres_changes=[binding])
            await sub.close()

    asyncio.run(scenario())


def test_a_token_expired_seconds_ago_is_refused_at_the_join(server: ReferenceServer) -> None:
    async def scenario() -> None:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            # Within the HTTP APIs' 5 s leeway, but the join's expiry timer would end it at
            # once: refused with the documented reply instead.
            with pytest.raises(RealtimeRefused, match="InvalidJWTToken"):
                await sub.join("stale", access_token=token(server, 1, ttl=-2))
            await sub.close()

    asyncio.run(scenario())


def test_refreshed_token_that_is_bad_closes_the_channel(server: ReferenceServer) -> None:
    async def scenario() -> None:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            await sub.join("r", access_token=token(server, 1))
            sub.keep_frames = True
            sub.start()
            await sub.send("realtime:r", "access_token", {"access_token": "garbage"},
                           join_ref=sub.join_ref)  # fmt: skip
            await until(lambda: any('"phx_close"' in t for _, t in sub.frames))
            system = [json.loads(t) for _, t in sub.frames if '"system"' in t]
            await sub.close()
        assert system and system[0]["payload"]["status"] == "error"
        assert system[0]["payload"]["extension"] == "system"

    asyncio.run(scenario())


def test_token_expiry_ends_the_channel(server: ReferenceServer) -> None:
    async def scenario() -> list[dict[str, Any]]:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            sub.keep_frames = True
            await sub.join("short", access_token=token(server, 1, ttl=1))
            sub.start()
            await until(lambda: any('"phx_close"' in t for _, t in sub.frames), timeout=4)
            frames = [json.loads(t) for _, t in sub.frames]
            await sub.close()
            return frames

    frames = asyncio.run(scenario())
    assert [f["event"] for f in frames] == ["system", "phx_close"]
    assert frames[0]["payload"]["message"] == "Token has expired"


def test_rest_broadcast_reaches_the_channel(server: ReferenceServer) -> None:
    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            sub.keep_frames = True
            await sub.join("news")
            sub.start()
            body = {"messages": [{"topic": "news", "event": "flash", "payload": {"x": 1}}]}
            headers = {"apikey": server.anon_key}
            async with session.post(
                f"{server.url}/realtime/v1/api/broadcast", json=body, headers=headers
            ) as resp:
                status = resp.status
            await until(lambda: bool(sub.frames))
            frames = [json.loads(t) for _, t in sub.frames]
            await sub.close()
            return status, frames

    status, frames = asyncio.run(scenario())
    assert status == 202
    assert frames[0]["event"] == "broadcast"
    assert frames[0]["payload"] == {"type": "broadcast", "event": "flash", "payload": {"x": 1}}


def test_rest_broadcast_without_a_topic_or_event_is_refused_whole(
    server: ReferenceServer,
) -> None:
    # {"topic": null, ...} answered 202 and went out to the topic "realtime:None"; an item
    # without a payload answered 400 after the items before it had gone out.
    async def scenario() -> tuple[list[int], list[dict[str, Any]]]:
        statuses = []
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            sub.keep_frames = True
            await sub.join("t")
            sub.start()
            for bad in (
                {"topic": None, "event": "e", "payload": None},
                {"topic": "t", "event": 5, "payload": None},
                {"topic": "t", "event": "e"},
            ):
                body = {"messages": [{"topic": "t", "event": "ok", "payload": {}}, bad]}
                async with session.post(
                    f"{server.url}/realtime/v1/api/broadcast",
                    json=body,
                    headers={"apikey": server.anon_key},
                ) as resp:
                    statuses.append(resp.status)
            await asyncio.sleep(0.3)  # what was sent has arrived by now
            frames = [json.loads(t) for _, t in sub.frames]
            await sub.close()
        return statuses, frames

    statuses, frames = asyncio.run(scenario())
    assert statuses == [400, 400, 400]
    assert not [f for f in frames if f["event"] == "broadcast"], frames


def test_rest_broadcast_of_one_event_reaches_the_channel(server: ReferenceServer) -> None:
    """realtime-js's httpSend: POST /api/broadcast/<topic>/events/<event>, body = payload."""

    async def scenario() -> tuple[list[int], list[dict[str, Any]]]:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            sub.keep_frames = True
            await sub.join("room 7")
            sub.start()
            base = f"{server.url}/realtime/v1/api/broadcast/room%207/events"
            key = {"apikey": server.anon_key, "Authorization": f"Bearer {token(server, 1)}"}
            statuses = []
            for path, headers, body in (
                ("/cursor", key, {"x": 1}),
                ("/cursor?private=true", key, {"x": 2}),
                ("/cursor", {"apikey": "not-a-key"}, {"x": 3}),
            ):
                async with session.post(base + path, json=body, headers=headers) as resp:
                    statuses.append(resp.status)
            bad = {**key, "Content-Type": "application/json"}
            async with session.post(base + "/cursor", data=b"{not json", headers=bad) as resp:
                statuses.append(resp.status)
            await until(lambda: bool(sub.frames))
            await asyncio.sleep(0.2)  # nothing else may follow
            frames = [json.loads(t) for _, t in sub.frames]
            await sub.close()
            return statuses, frames

    statuses, frames = asyncio.run(scenario())
    # The private one is skipped: no policy lets testuser1 broadcast there (and the
    # private channel "room 7" is not the public one).
    assert statuses == [202, 202, 401, 400]
    assert [f["payload"] for f in frames] == [
        {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
    ]


def test_a_join_that_waits_for_its_bindings_fails_when_they_cannot_be_made(
    server: ReferenceServer,
) -> None:
    """realtime-js's postgres_changes_options.wait: the join reply itself is the error."""

    async def scenario() -> list[dict[str, Any]]:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            replies = []
            for table in ("no_such_table", "messages"):
                config = {
                    "postgres_changes": [{"event": "*", "schema": "public", "table": table}],
                    "postgres_changes_options": {"wait": True},
                }
                payload = {"config": config, "access_token": token(server, 1)}
                ref = await sub.send(f"realtime:w-{table}", "phx_join", payload, join_ref=None)
                async with asyncio.timeout(5):
                    while True:
                        frame = json.loads((await sub.ws.receive()).data)
                        if frame["event"] == "phx_reply" and frame["ref"] == ref:
                            replies.append(frame["payload"])
                            break
            await sub.close()
            return replies

    missing, ok = asyncio.run(scenario())
    assert missing["status"] == "error" and "no table public.no_such_table" in str(missing)
    assert ok["status"] == "ok" and ok["response"]["postgres_changes"][0]["table"] == "messages"


def test_listen_link_comes_back_after_a_break(
    server: ReferenceServer, db: psycopg.Connection[Any]
) -> None:
    async def scenario() -> list[str]:
        async with aiohttp.ClientSession() as session:
            sub = await subscriber(session, server, 1, filter=f"conversation_id=eq.{CONV['13']}")
            killed = db.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'realtime'"
                " AND query ILIKE 'listen%'"
            ).fetchone()
            assert killed == (1,)
            seen: list[str] = []
            deadline = time.monotonic() + 10
            while not seen and time.monotonic() < deadline:  # changes during the gap are lost
                insert(db, "13", 1, "after the break")
                await asyncio.sleep(0.3)
                seen = [p["data"]["record"]["content"] for p in changes_of(sub)]
            await sub.close()
            return seen

    assert "after the break" in asyncio.run(scenario())


def test_a_write_right_after_the_reply_is_not_missed(
    server: ReferenceServer, db: psycopg.Connection[Any]
) -> None:
    """supabase-js reports SUBSCRIBED on phx_reply: a change committed then must arrive."""

    async def scenario() -> list[str]:
        url = websocket_url(server.url, server.anon_key)
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, url)
            binding = {"event": "INSERT", "schema": "public", "table": "message_read_receipts"}
            ref = await sub.send("realtime:fresh", "phx_join",
                                 {"config": {"postgres_changes": [binding]},
                                  "access_token": token(server, 1)})  # fmt: skip
            events: list[str] = []
            while True:
                frame = json.loads((await sub.ws.receive(timeout=5)).data)
                events.append(frame["event"])
                if frame["event"] == "phx_reply" and frame["ref"] == ref:
                    break
            message_id = insert(db, "12", 1, "read me")
            db.execute(
                "INSERT INTO message_read_receipts (message_id, user_id) VALUES (%s, %s)",
                (message_id, USER[1]),
            )
            while "postgres_changes" not in events:
                events.append(json.loads((await sub.ws.receive(timeout=5)).data)["event"])
            await sub.close()
            return events

    events = asyncio.run(scenario())
    assert events == ["phx_reply", "system", "postgres_changes"]


def test_a_stopping_server_says_it_is_going_away(scratch_dsn: str) -> None:
    # Ctrl-C of `backend serve` dropped the sockets: clients saw 1006 (abnormal closure).
    with ReferenceServer(scratch_dsn) as own:

        async def scenario() -> int | None:
            async with aiohttp.ClientSession() as session:
                sub = await Subscriber.connect(session, websocket_url(own.url, own.anon_key))
                await asyncio.get_running_loop().run_in_executor(None, own.stop)
                message = await sub.ws.receive(timeout=10)
                assert message.type == aiohttp.WSMsgType.CLOSE, message  # a close frame
                return int(message.data)

        assert asyncio.run(scenario()) == aiohttp.WSCloseCode.GOING_AWAY
