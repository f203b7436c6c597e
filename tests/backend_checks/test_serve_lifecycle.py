"""``devicelab backend serve`` and the reference server across their lifecycle: keys
that survive a restart, a hang-up that closes every socket, a default port taken at the
last moment, pooled connections the database ended. Real servers over a scratch database
on the local PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backend_checks.reference.serve import prepare_database
from tests.serve_process import start_serve

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def dsn(make_db: Callable[[], str]) -> str:
    """A scratch database with the schema and the server's small seed."""
    return prepare_database(make_db(), say=lambda _: None)


def _start(dsn: str, state: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """A serve process and its printed SUPABASE_* lines."""
    return start_serve(state, "--dsn", dsn, "--port", "0", *args)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def test_a_restarted_server_prints_the_same_keys(dsn: str, tmp_path: Path) -> None:
    first, printed = _start(dsn, tmp_path)
    assert _stop(first)[0] == 0
    second, again = _start(dsn, tmp_path)
    assert _stop(second)[0] == 0
    assert again["SUPABASE_ANON_KEY"] == printed["SUPABASE_ANON_KEY"]
    assert again["SUPABASE_SERVICE_ROLE_KEY"] == printed["SUPABASE_SERVICE_ROLE_KEY"]


def test_an_ipv6_host_is_printed_in_brackets(dsn: str, tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not available")
    proc, printed = _start(dsn, tmp_path, "--host", "::1")
    _stop(proc)
    assert printed["SUPABASE_URL"].startswith("http://[::1]:"), printed["SUPABASE_URL"]


async def _sockets_closed_by(
    proc: subprocess.Popen[str], url: str, key: str, sig: int
) -> list[Any]:
    import aiohttp

    from backend_checks.reference.realtime_client import websocket_url

    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(websocket_url(url, key)) for _ in range(3)]
        await asyncio.sleep(0.2)
        proc.send_signal(sig)
        frames = [await asyncio.wait_for(ws.receive(), 10) for ws in sockets]
        for ws in sockets:
            await ws.close()
    return [(frame.type, frame.data) for frame in frames]


def test_a_hang_up_stops_as_gracefully_as_sigterm(dsn: str, tmp_path: Path) -> None:
    """Every websocket gets its close frame (1001), and the exit code says SIGHUP."""
    import aiohttp

    proc, printed = _start(dsn, tmp_path)
    try:
        frames = asyncio.run(_sockets_closed_by(
            proc, printed["SUPABASE_URL"], printed["SUPABASE_ANON_KEY"], signal.SIGHUP
        ))  # fmt: skip
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert frames == [(aiohttp.WSMsgType.CLOSE, 1001)] * 3, frames
    assert proc.returncode == 129, err
    assert "Traceback" not in err


def test_a_default_port_taken_at_bind_time_gives_way_to_a_free_one(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers started at once both found the default port free; the second to bind
    takes any free port. A port that was asked for stays refused."""
    from backend_checks.reference import serve
    from backend_checks.reference.server import PortInUse

    spec = serve._Server(dsn, "127.0.0.1", "s" * 64, 1_700_000_000, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(serve, "DEFAULT_PORT", port)

        async def both() -> int:
            server = await serve._start(spec, port, True)
            await server.astop()
            with pytest.raises(PortInUse):
                await serve._start(spec, port, False)
            return int(server.port)

        assert asyncio.run(both()) not in (0, port)


def test_pooled_connections_the_database_ended_are_replaced_quietly(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The database ended every pooled connection (a restart, `backend stop`): requests
    get a fresh connection, not 500 57P01, and nothing is logged as an error."""
    import httpx

    from backend_checks.reference.server import ReferenceServer

    with ReferenceServer(dsn, pool_max_size=4) as server:
        headers = {"apikey": server.anon_key}
        token = "/auth/v1/token?grant_type=password"
        login = {"email": "testuser1@example.com", "password": "password123"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=20) as http:
            for _ in range(4):
                assert http.post(token, json=login).status_code == 200
            with psycopg.connect(dsn, autocommit=True) as conn:
                ended = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'"
                ).fetchone()
            assert ended is not None and ended[0] >= 1
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="backend_checks.reference.app"):
                answers = [http.post(token, json=login) for _ in range(3)]
                access = answers[0].json()["access_token"]
                rest = http.get("/rest/v1/conversation_list?limit=1",
                                headers={"Authorization": f"Bearer {access}"})  # fmt: skip
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert rest.status_code == 200, rest.text
    assert not [r for r in caplog.records if r.name == "backend_checks.reference.app"]
