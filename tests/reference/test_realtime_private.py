"""Private channels of the reference server's Realtime (Realtime Authorization): the
database's policies on realtime.messages decide who joins, hears, sends and tracks.

The policies are the test's own, made for the module and dropped after it: members of a
conversation share ``conv:<id>``; ``news`` is read-only to every signed-in user; ``lobby``
is presence only; ``broken``'s policy fails when it runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import psycopg
import pytest
from conftest import PASSWORD, conversation_id, run_script, until
from conftest import user_token as token

from backend_checks.reference.realtime_client import RealtimeRefused, Subscriber, websocket_url
from backend_checks.reference.server import ReferenceServer

ROOM = f"conv:{conversation_id('12')}"  # testusers 1 and 2
MEMBERS = (
    "realtime.topic() like 'conv:%%' and exists (select 1 from public.conversations c"
    " where c.id::text = split_part(realtime.topic(), ':', 2) and auth.uid() = any(c.participants))"
)
POLICIES = {
    "members_read": f"for select to authenticated using ({MEMBERS})",
    "members_write": f"for insert to authenticated with check ({MEMBERS})",
    "news_read": "for select to authenticated using (realtime.topic() = 'news')",
    "lobby_read": "for select to authenticated"
    " using (realtime.topic() = 'lobby' and extension = 'presence')",
    "lobby_write": "for insert to authenticated"
    " with check (realtime.topic() = 'lobby' and extension = 'presence')",
    # Division by zero on the topic "broken" (6 characters) only.
    "broken_read": "for select to authenticated using (1 / (length(realtime.topic()) - 6) = 1)",
}


@pytest.fixture(scope="module")
def policies(server: ReferenceServer, scratch_dsn: str) -> Iterator[None]:
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        for name, body in POLICIES.items():
            conn.execute(f"create policy dl_test_{name} on realtime.messages {body}")
        try:
            yield
        finally:
            for name in POLICIES:
                conn.execute(f"drop policy if exists dl_test_{name} on realtime.messages")


async def member(
    session: aiohttp.ClientSession, server: ReferenceServer, user: int, topic: str, **kw: Any
) -> Subscriber:
    """A socket of testuser<user> joined to private channel ``topic``, reading."""
    sub = await Subscriber.connect(session, websocket_url(server.url, server.anon_key))
    await sub.join(topic, access_token=token(server, user), private=True, **kw)
    sub.keep_frames = True
    sub.start()
    return sub


def frames(sub: Subscriber, event: str) -> list[dict[str, Any]]:
    return [f for f in (json.loads(t) for _, t in sub.frames) if f["event"] == event]


def said(sub: Subscriber) -> list[Any]:
    """The user payloads of the broadcasts ``sub`` heard."""
    return [f["payload"]["payload"] for f in frames(sub, "broadcast")]


async def shout(sub: Subscriber, text: str) -> str:
    payload = {"type": "broadcast", "event": "say", "payload": {"text": text}}
    return await sub.send(sub.topic, "broadcast", payload, join_ref=sub.join_ref)


async def track(sub: Subscriber, meta: dict[str, Any]) -> str:
    payload = {"type": "presence", "event": "track", "payload": meta}
    return await sub.send(sub.topic, "presence", payload, join_ref=sub.join_ref)


def reply(sub: Subscriber, ref: str) -> dict[str, Any] | None:
    found = [f["payload"] for f in frames(sub, "phx_reply") if f["ref"] == ref]
    return found[0] if found else None


def service_token(server: ReferenceServer) -> str:
    return server.ctx.sign({"role": "service_role", "exp": int(time.time()) + 600})


@pytest.mark.usefixtures("policies")
def test_members_join_and_hear_each_other_and_outsiders_are_refused(
    server: ReferenceServer,
) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            one = await member(session, server, 1, ROOM, broadcast={"ack": True, "self": False})
            two = await member(session, server, 2, ROOM)
            outsider = await Subscriber.connect(session, websocket_url(server.url, server.anon_key))
            with pytest.raises(RealtimeRefused) as refused:
                await outsider.join(ROOM, access_token=token(server, 4), private=True)
            assert str(refused.value) == str(
                {
                    "reason": "Unauthorized: You do not have permissions to read from this"
                    f" Channel topic: {ROOM}"
                }
            )
            # The public channel of the same name is another channel.
            await outsider.join(ROOM, access_token=token(server, 4))
            outsider.keep_frames = True
            outsider.start()
            ref = await shout(one, "members only")
            await until(lambda: bool(said(two)) and reply(one, ref) is not None)
            assert reply(one, ref) == {"status": "ok", "response": {}}
            await shout(outsider, "from the public side")
            await asyncio.sleep(0.3)  # anything crossing over would have arrived by now
            assert said(two) == [{"text": "members only"}]
            assert said(outsider) == []
            for sub in (one, two, outsider):
                await sub.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("policies")
def test_a_read_only_channel_drops_sends_and_refuses_tracks(server: ReferenceServer) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            one = await member(session, server, 1, "news", broadcast={"ack": True})
            two = await member(session, server, 2, "news")
            sent = await shout(one, "not mine to say")
            tracked = await track(one, {"online": True})
            await until(lambda: reply(one, tracked) is not None)
            assert reply(one, tracked) == {
                "status": "error",
                "response": {"reason": "unauthorized"},
            }
            # Over REST: a user's private broadcast is skipped; the service role's goes out.
            url = f"{server.url}/realtime/v1/api/broadcast"
            for who, bearer in (("user", token(server, 1)), ("service", service_token(server))):
                body = {"messages": [{"topic": "news", "event": "say", "private": True,
                                      "payload": {"text": who}}]}  # fmt: skip
                headers = {"apikey": server.anon_key, "Authorization": f"Bearer {bearer}"}
                async with session.post(url, json=body, headers=headers) as resp:
                    assert resp.status == 202
            await until(lambda: bool(said(two)))
            await asyncio.sleep(0.3)
            assert said(two) == [{"text": "service"}]
            assert reply(one, sent) is None  # no ack for a dropped broadcast
            for sub in (one, two):
                await sub.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("policies")
def test_a_presence_only_channel_shares_presence_and_no_broadcast(
    server: ReferenceServer,
) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            one = await member(session, server, 1, "lobby")
            two = await member(session, server, 2, "lobby")
            tracked = await track(one, {"name": "one"})
            await until(lambda: bool(frames(two, "presence_diff")) and bool(reply(one, tracked)))
            assert reply(one, tracked) == {"status": "ok", "response": {}}
            (diff,) = frames(two, "presence_diff")
            (entry,) = diff["payload"]["joins"].values()
            assert entry["metas"][0]["name"] == "one"
            url = f"{server.url}/realtime/v1/api/broadcast/lobby/events/say?private=true"
            headers = {
                "apikey": server.anon_key,
                "Authorization": f"Bearer {service_token(server)}",
            }
            async with session.post(url, json={"text": "hello"}, headers=headers) as resp:
                assert resp.status == 202
            await asyncio.sleep(0.3)
            assert said(one) == said(two) == []  # no right to hear broadcasts here
            for sub in (one, two):
                await sub.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("policies")
def test_a_failing_policy_refuses_the_join_with_its_error(server: ReferenceServer) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, websocket_url(server.url, server.anon_key))
            with pytest.raises(RealtimeRefused, match="RlsPolicyError: division by zero"):
                await sub.join("broken", access_token=token(server, 1), private=True)
            await sub.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("policies")
def test_an_outsiders_token_ends_the_private_channel(server: ReferenceServer) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            sub = await member(session, server, 1, ROOM)
            await sub.send(sub.topic, "access_token", {"access_token": token(server, 4)},
                           join_ref=sub.join_ref)  # fmt: skip
            await until(lambda: bool(frames(sub, "phx_close")))
            await sub.close()
            return [f["payload"] for f in frames(sub, "system")]

    (system,) = asyncio.run(scenario())
    assert system["status"] == "error"
    assert system["message"] == (
        f"Unauthorized: You do not have permissions to read from this Channel topic: {ROOM}"
    )


@pytest.mark.usefixtures("policies")
def test_a_topic_no_policy_opens_is_closed(server: ReferenceServer) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, websocket_url(server.url, server.anon_key))
            with pytest.raises(RealtimeRefused, match="Unauthorized"):
                await sub.join("anything", access_token=token(server, 1), private=True)
            await sub.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("policies")
def test_supabase_js_private_channel(server: ReferenceServer) -> None:
    """The real client: two members talk on a private channel, a closed one errors."""
    verdict = run_script("private_compat.mjs", server, PASSWORD=PASSWORD, ROOM=ROOM,
                         CLOSED="closed-topic")  # fmt: skip
    subscribed = {"status": "SUBSCRIBED", "error": None}
    assert verdict["listener"] == verdict["talker"] == subscribed, verdict
    assert verdict["ack"] == "ok", verdict
    assert verdict["heard"] == {"text": "hi"}, verdict
    closed = verdict["closed"]
    assert isinstance(closed, dict) and closed["status"] == "CHANNEL_ERROR", verdict
    assert "You do not have permissions to read from this Channel topic: closed-topic" in str(
        closed["error"]
    )


@pytest.mark.usefixtures("policies")
def test_broadcast_from_the_database_reaches_its_topic(
    server: ReferenceServer, db: psycopg.Connection[Any]
) -> None:
    """realtime.send: a private message to the private channel only, a public one to the
    public channel only; a send that fails warns and never fails the caller."""

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as session:
            private = await member(session, server, 1, "news")
            public = await Subscriber.connect(session, websocket_url(server.url, server.anon_key))
            await public.join("news", access_token=token(server, 2))
            public.keep_frames = True
            public.start()
            for text, is_private in (("to members", True), ("to everyone", False)):
                db.execute(
                    "select realtime.send(%s::jsonb, 'say', 'news', %s)",
                    (json.dumps({"text": text}), is_private),
                )
            db.execute("select realtime.send('{}'::jsonb, 'say', null)")  # NOT NULL: warned
            await until(lambda: bool(said(private)) and bool(said(public)))
            await asyncio.sleep(0.3)
            got = frames(private, "broadcast"), frames(public, "broadcast")
            for sub in (private, public):
                await sub.close()
            return got

    to_private, to_public = asyncio.run(scenario())
    assert [f["payload"]["payload"] for f in to_private] == [{"text": "to members"}]
    assert [f["payload"]["payload"] for f in to_public] == [{"text": "to everyone"}]
    (message,) = to_private
    assert message["payload"]["event"] == "say" and message["payload"]["type"] == "broadcast"
    assert len(message["payload"]["meta"]["id"]) == 36  # the row's uuid


@pytest.mark.usefixtures("policies")
def test_broadcast_changes_from_a_trigger(
    server: ReferenceServer, db: psycopg.Connection[Any]
) -> None:
    """realtime.broadcast_changes in a row trigger, as Supabase's docs set it up."""
    db.execute("create table public.dl_test_notes (id int primary key, body text)")
    try:
        db.execute(
            """create function public.dl_test_notes_changed() returns trigger
               language plpgsql security definer as $$
               begin
                 perform realtime.broadcast_changes('news', tg_op, tg_op, tg_table_name,
                                                    tg_table_schema, new, old);
                 return null;
               end $$"""
        )
        db.execute(
            "create trigger dl_test_notes_changed after insert or update on public.dl_test_notes"
            " for each row execute function public.dl_test_notes_changed()"
        )

        async def scenario() -> list[dict[str, Any]]:
            async with aiohttp.ClientSession() as session:
                sub = await member(session, server, 1, "news")
                db.execute("insert into public.dl_test_notes values (1, 'first')")
                db.execute("update public.dl_test_notes set body = 'second' where id = 1")
                await until(lambda: len(said(sub)) == 2)
                await sub.close()
                return [f["payload"] for f in frames(sub, "broadcast")]

        inserted, updated = asyncio.run(scenario())
    finally:
        db.execute("drop table public.dl_test_notes")
        db.execute("drop function public.dl_test_notes_changed()")
    assert inserted["event"] == "INSERT"
    assert inserted["payload"] == {"operation": "INSERT", "schema": "public",
                                   "table": "dl_test_notes", "record": {"id": 1, "body": "first"},
                                   "old_record": None}  # fmt: skip
    assert updated["event"] == "UPDATE"
    assert updated["payload"]["record"] == {"id": 1, "body": "second"}
    assert updated["payload"]["old_record"] == {"id": 1, "body": "first"}


@pytest.mark.usefixtures("policies")
def test_a_private_join_replays_recent_broadcasts_once(
    server: ReferenceServer, db: psycopg.Connection[Any]
) -> None:
    """broadcast.replay {since, limit}: the newest private broadcasts of the topic since
    then, oldest first, marked replayed; not the public ones, not other topics', and none
    twice when their live copy comes after the join."""
    since = int(time.time() * 1000) - 1000
    for text, topic, is_private in (("old 1", "news", True), ("old 2", "news", True),
                                    ("old 3", "news", True), ("public", "news", False),
                                    ("elsewhere", "lobby", True)):  # fmt: skip
        db.execute(
            "select realtime.send(%s::jsonb, 'say', %s, %s)",
            (json.dumps({"text": text}), topic, is_private),
        )

    async def scenario() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            sub = await member(session, server, 1, "news",
                               broadcast={"replay": {"since": since, "limit": 2}})  # fmt: skip
            db.execute("select realtime.send('{\"text\": \"live\"}'::jsonb, 'say', 'news')")
            await until(lambda: len(said(sub)) >= 3)
            await asyncio.sleep(0.3)  # a second copy of a replayed one would be here now
            await sub.close()
            return [f["payload"] for f in frames(sub, "broadcast")]

    got = asyncio.run(scenario())
    assert [m["payload"]["text"] for m in got] == ["old 2", "old 3", "live"]
    assert [m["meta"].get("replayed") for m in got] == [True, True, None]


@pytest.mark.usefixtures("policies")
def test_replay_is_refused_on_public_channels_and_with_bad_params(
    server: ReferenceServer,
) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sub = await Subscriber.connect(session, websocket_url(server.url, server.anon_key))
            now = int(time.time() * 1000)
            with pytest.raises(RealtimeRefused, match="Replay is not allowed for public"):
                await sub.join("news", access_token=token(server, 1),
                               broadcast={"replay": {"since": now}})  # fmt: skip
            for bad in ({"since": "yesterday"}, {"since": now, "limit": 2.5}, "now"):
                with pytest.raises(RealtimeRefused, match="Replay params are not valid"):
                    await sub.join("news", access_token=token(server, 1), private=True,
                                   broadcast={"replay": bad})  # fmt: skip
            await sub.close()

    asyncio.run(scenario())
