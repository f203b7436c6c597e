"""The realtime checks' verdicts when a Supabase API misbehaves, and their clean-up.

A small fake API (below) stands in for a misbehaving project: it speaks the real wire
protocol (REST, Realtime's Phoenix frames over a real websocket on loopback) and can be
told to never subscribe, never deliver, error a channel, or refuse the websocket. The
clean-up is checked against the reference server over a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from aiohttp import WSMsgType, web

from backend_checks.api_checks import PLANS, RealtimeLoad, SupabaseProject, preflight
from backend_checks.datagen import DatagenParams
from backend_checks.realtime_checks import MAX_SAMPLES, _Deliveries, run_realtime_checks
from backend_checks.reference.server import ReferenceServer
from devicelab.errors import UnsafeActionRefused
from devicelab.models import percentile, summarize

ANON = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.ANONKEYSECRETSIGNATURE"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.ACCESSTOKENSECRETSIGNATURE"
CONVERSATION = "22222222-2222-2222-2222-222222222222"
LOAD = RealtimeLoad(subscribers=4, inserts=5, rate_per_s=50, cold_inserts=1, idle_s=0.05,
                    timeout_s=1)  # fmt: skip


def fake_api(mode: str = "") -> web.Application:
    """A Supabase API of one user and conversation. ``mode``: "" behaves; "nosub" never
    sends "Subscribed"; "nodeliver" never sends a change; "syserr" errors one channel after
    the second insert; "reject" refuses the websocket (403)."""
    channels: list[tuple[web.WebSocketResponse, str]] = []
    inserts: list[str] = []

    async def token(_: web.Request) -> web.Response:
        return web.json_response({"access_token": TOKEN, "user": {"id": "u1"}})

    async def conversations(_: web.Request) -> web.Response:
        return web.json_response([{"id": CONVERSATION}])

    async def insert(request: web.Request) -> web.Response:
        row = await request.json()
        inserts.append(row["content"])
        for ws, topic in list(channels) if mode != "nodeliver" else []:
            change = {"schema": "public", "table": "messages", "type": "INSERT", "record": row}
            await ws.send_str(
                json.dumps(
                    {
                        "topic": topic,
                        "event": "postgres_changes",
                        "ref": None,
                        "payload": {"ids": [1], "data": change},
                    }
                )
            )
        if mode == "syserr" and len(inserts) == 2:
            ws, topic = channels[0]
            error = {
                "extension": "postgres_changes",
                "status": "error",
                "message": "replication slot lost",
                "channel": topic,
            }
            await ws.send_str(json.dumps({"topic": topic, "event": "system", "ref": None,
                                          "payload": error}))  # fmt: skip
        return web.Response(status=201)

    async def delete(_: web.Request) -> web.Response:
        return web.json_response([])  # as RLS without a DELETE policy: nothing deleted

    async def websocket(request: web.Request) -> web.StreamResponse:
        if mode == "reject":
            return web.json_response({"message": "Unauthorized"}, status=403)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            frame = json.loads(msg.data) if msg.type == WSMsgType.TEXT else {}
            if frame.get("event") != "phx_join":
                continue
            topic = frame["topic"]
            reply = {"status": "ok", "response": {"postgres_changes": [{"id": 1}]}}
            await ws.send_str(
                json.dumps(
                    {"topic": topic, "event": "phx_reply", "ref": frame["ref"], "payload": reply}
                )
            )
            if mode != "nosub":
                channels.append((ws, topic))
                ok = {
                    "extension": "postgres_changes",
                    "status": "ok",
                    "message": "Subscribed to PostgreSQL",
                    "channel": topic,
                }
                await ws.send_str(json.dumps({"topic": topic, "event": "system", "ref": None,
                                              "payload": ok}))  # fmt: skip
        return ws

    app = web.Application()
    app.add_routes([web.post("/auth/v1/token", token),
                    web.get("/rest/v1/conversations", conversations),
                    web.post("/rest/v1/messages", insert), web.delete("/rest/v1/messages", delete),
                    web.get("/realtime/v1/websocket", websocket)])  # fmt: skip
    return app


async def _against(app: web.Application, work: Callable[[str], Any]) -> Any:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return await work(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def run_against(mode: str, load: RealtimeLoad = LOAD) -> list[Any]:
    """The realtime checks' results against the fake API in ``mode``."""

    async def work(url: str) -> Any:
        project = SupabaseProject(url=url, anon_key=ANON, email="t@e.com", password="pw-secret")
        return await run_realtime_checks(project, load)

    found: list[Any] = asyncio.run(_against(fake_api(mode), work))
    return found


def test_joins_that_never_subscribe_fail_and_say_what_was_missing() -> None:
    setup, broadcast = run_against("nosub")
    # The server answers: a failed check (exit 1), not an infrastructure error (exit 3).
    assert setup.status == "fail" and broadcast.status == "fail"
    assert (
        "4 x phx_reply ok but no 'Subscribed to PostgreSQL' system message within 1 s"
        in setup.reason
    ), setup.reason
    assert "TimeoutError: ;" not in setup.reason


def test_a_server_that_delivers_nothing_fails_the_broadcast() -> None:
    setup, broadcast = run_against("nodeliver")
    assert setup.status == "pass"
    assert broadcast.status == "fail"
    assert broadcast.reason.startswith("no change was delivered: 0 of 24 deliveries")


def test_a_channel_error_mid_test_counts_as_a_disconnect() -> None:
    _setup, broadcast = run_against("syserr")
    assert broadcast.evidence["disconnects"] == 1
    assert broadcast.evidence["disconnect_reasons"] == ["replication slot lost"]
    assert broadcast.status == "fail" and "1 of 4 subscribers disconnected" in broadcast.reason


def test_a_refused_websocket_is_an_error_and_no_secret_is_kept() -> None:
    setup, broadcast = run_against("reject")
    assert setup.status == "error" and broadcast.status == "error"
    text = json.dumps([setup.model_dump(mode="json"), broadcast.model_dump(mode="json")])
    assert "403" in setup.reason
    assert ANON not in text and "ANONKEYSECRET" not in text and "ACCESSTOKEN" not in text
    assert "apikey=***" in setup.evidence["join_errors"][0]


def test_the_samples_are_the_warm_deliveries_and_the_summary_is_theirs() -> None:
    _setup, broadcast = run_against("")
    assert broadcast.status == "pass", broadcast.reason
    assert len(broadcast.samples) == 4 * 5  # subscribers x warm inserts
    assert broadcast.summary == summarize(broadcast.samples)
    assert broadcast.value == broadcast.summary.p95 == broadcast.evidence["warm"]["p95_ms"]


def test_many_deliveries_are_kept_as_quantiles_with_the_same_percentiles() -> None:
    deliveries = _Deliveries("x")
    warm = [float((i * 7919) % 100_003) / 100 for i in range(MAX_SAMPLES * 3)]
    deliveries.latency_ms["warm"] = warm
    samples = deliveries.samples()
    assert len(samples) == 1001
    summary = summarize(samples)
    assert summary is not None
    assert summary.p95 == percentile(warm, 95) and summary.p50 == percentile(warm, 50)
    assert summary.min == min(warm) and summary.max == max(warm)


def test_test_messages_left_by_rls_are_told_in_the_evidence() -> None:
    _setup, broadcast = run_against("")
    left = broadcast.evidence["test_messages"]
    assert left["inserted"] == 6 and left["deleted"] == 0 and left["left"] == 6
    assert "RLS" in left["left_why"] and CONVERSATION in left["left_where"]
    assert "6 test messages left in the database" in broadcast.reason


def test_the_test_messages_are_deleted_from_the_reference_backend(
    generate_db: Callable[[DatagenParams], str],
) -> None:
    dsn = generate_db(DatagenParams(messages=2_000, users=20, conversations=40, seed=3))
    with ReferenceServer(dsn) as server:
        project = SupabaseProject(
            url=server.url, anon_key=server.anon_key, kind="reference",
            email="testuser1@example.com", password="password123",
        )  # fmt: skip
        load = LOAD.model_copy(update={"timeout_s": 5})
        _setup, broadcast = asyncio.run(run_realtime_checks(project, load, sql_dsn=dsn))
    assert broadcast.evidence["test_messages"]["inserted"] == 6
    assert broadcast.evidence["test_messages"]["left"] == 0
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM messages WHERE content LIKE 'dlrt-%'").fetchone()
    assert row == (0,)


def test_the_plan_refusal_names_real_options_and_what_the_plan_allows() -> None:
    with pytest.raises(UnsafeActionRefused) as free:
        preflight(RealtimeLoad(subscribers=100), PLANS["free"])
    assert "--rate" not in free.value.hint
    assert free.value.hint.startswith("use --subscribers 10, or --plan pro")
    assert "allows at most 10 subscribers, fewer than the story's 100-1000" in free.value.message
    with pytest.raises(UnsafeActionRefused) as pro:
        preflight(RealtimeLoad(subscribers=1000), PLANS["pro"])
    assert pro.value.hint == (
        "use --subscribers 250; no published plan allows 1000 subscribers at 10 inserts/s"
    )


def test_inserts_cut_off_in_flight_are_not_counted_as_inserted() -> None:
    # The API went away after 7 of 32 inserts: the evidence said 32 inserted and left,
    # and the database held 7.
    import aiohttp

    from backend_checks.api_checks import Session
    from backend_checks.realtime_checks import _delete_inserted

    deliveries = _Deliveries("cutoff")
    for seq in range(32):
        deliveries.started[seq] = (0.0, False)
    deliveries.inserted.update(range(7))
    project = SupabaseProject(url="http://127.0.0.1:9", anon_key="k", email="a@b.c", password="p")
    session = Session(access_token="t", user_id="u", conversation_id="c")

    async def cleanup() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            return await _delete_inserted(http, project, session, deliveries, None)

    found = asyncio.run(cleanup())
    assert (found["inserted"], found["unconfirmed"], found["left"]) == (7, 25, 7)
    assert "REST delete failed" in found["left_why"]
