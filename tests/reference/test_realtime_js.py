"""supabase-js (the real npm package) against the reference server's Realtime.

Runs tests/reference/js/realtime_compat.mjs with node for both serializer versions: it
subscribes to postgres_changes, a broadcast channel (self + ack) and a presence channel,
and reports what it sees as JSON lines. Skips when node or the npm packages are missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backend_checks.reference.server import ReferenceServer

JS_DIR = Path(__file__).parent / "js"
USER = {n: f"00000000-0000-4000-8000-00000000000{n}" for n in range(1, 5)}
CONV = {k: f"10000000-0000-4000-8000-0000000000{k}" for k in ("12", "13", "23", "34")}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (JS_DIR / "node_modules" / "@supabase" / "supabase-js").is_dir():
        pytest.skip("run `npm ci` in tests/reference/js first")
    return node


def _run(server: ReferenceServer, db: psycopg.Connection[Any], vsn: str) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "SUPABASE_URL": server.url,
        "SUPABASE_ANON_KEY": server.anon_key,
        "EMAIL": "testuser1@example.com",
        "PASSWORD": "password123",
        "CONV": CONV["12"],
        "VSN": vsn,
        "EXPECT": "2",
        "TIMEOUT_MS": "20000",
    }
    proc = subprocess.Popen(
        [_node(), "realtime_compat.mjs"],
        cwd=JS_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        for raw in proc.stdout:
            line = json.loads(raw)
            lines.append(line)
            if line["kind"] == "ready":
                for conv, text in (("12", "js one"), ("34", "not for user 1"), ("12", "js two")):
                    db.execute(
                        "INSERT INTO messages (conversation_id, sender_id, content)"
                        " VALUES (%s, %s, %s)",
                        (CONV[conv], USER[int(conv[0])], text),
                    )
            if line["kind"] in ("done", "timeout"):
                break
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    assert proc.returncode == 0, f"node failed: {lines} {proc.stderr.read()[-2000:]}"
    return lines


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
def test_supabase_js_realtime(
    server: ReferenceServer, db: psycopg.Connection[Any], vsn: str
) -> None:
    lines = _run(server, db, vsn)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_kind.setdefault(line["kind"], []).append(line)

    system = [s["payload"] for s in by_kind["system"]]
    assert {"message": "Subscribed to PostgreSQL", "status": "ok",
            "extension": "postgres_changes", "channel": "db-changes"} in system  # fmt: skip

    changes = [c["payload"] for c in by_kind["change"]]
    assert [c["new"]["content"] for c in changes] == ["js one", "js two"]  # RLS: not "34"
    first = changes[0]
    assert (first["schema"], first["table"], first["eventType"]) == ("public", "messages", "INSERT")
    assert first["old"] == {} and first["errors"] is None
    assert first["new"]["conversation_id"] == CONV["12"]
    assert first["commit_timestamp"].endswith("Z")

    assert by_kind["ack"][0]["result"] == "ok"
    broadcasts = [(b["message"]["event"], b["message"]["payload"]) for b in by_kind["broadcast"]]
    assert by_kind["http_send"][0]["result"] == {"success": True}
    assert broadcasts == [("ping", {"n": 1}), ("ping", {"n": 2})]
    assert by_kind["track"][0]["result"] == "ok"
    state = by_kind["presence"][-1]["state"]
    assert list(state) == ["user-a"] and state["user-a"][0]["online"] is True
    assert by_kind["heartbeats"][0]["count"] >= 1
    assert by_kind["left"][0]["result"] == "ok"


def test_supabase_py_realtime(server: ReferenceServer, db: psycopg.Connection[Any]) -> None:
    """supabase-py (realtime-py, vsn 1.0.0, pydantic-checked frames) receives an insert."""
    supabase = pytest.importorskip("supabase")

    async def scenario() -> tuple[list[Any], list[Any]]:
        client = await supabase.acreate_client(server.url, server.anon_key)
        await client.auth.sign_in_with_password(
            {"email": "testuser2@example.com", "password": "password123"}
        )
        await asyncio.sleep(0.1)  # the SIGNED_IN event hands the token to realtime
        received: list[Any] = []
        system: list[Any] = []
        channel = client.channel("py-changes")
        channel.on_postgres_changes(
            "INSERT",
            callback=received.append,
            table="messages",
            schema="public",
            filter=f"conversation_id=eq.{CONV['23']}",
        )
        channel.on_system(system.append)
        await channel.subscribe()
        for _ in range(100):
            if system:
                break
            await asyncio.sleep(0.05)
        db.execute(
            "INSERT INTO messages (conversation_id, sender_id, content) VALUES (%s, %s, 'py')",
            (CONV["23"], USER[3]),
        )
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.05)
        await client.remove_all_channels()
        return received, system

    received, system = asyncio.run(scenario())
    assert system and system[0].message == "Subscribed to PostgreSQL"
    assert len(received) == 1
    data = received[0]["data"]
    assert data["type"] == "INSERT" and data["record"]["content"] == "py"
