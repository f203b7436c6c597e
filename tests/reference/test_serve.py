"""``devicelab backend serve`` (through register_serve) over an empty scratch database."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import fresh_database

# The real command line: ``devicelab backend serve`` (the backend group wires serve.py in).
_RUNNER = "import sys; from devicelab.cli import main; main(sys.argv[1:])"


@pytest.fixture
def empty_dsn() -> Iterator[str]:
    """An empty database, dropped afterwards."""
    with fresh_database("serve") as (dsn, _):
        yield dsn


def test_serve_seeds_prints_keys_and_stops_on_sigterm(empty_dsn: str, tmp_path: Path) -> None:
    env = {**os.environ, "DEVICELAB_STATE": str(tmp_path)}
    # A given database: installing the schema there must be asked for.
    serve = ["backend", "serve", "--dsn", empty_dsn, "--port", "0", "--allow-writes"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, *serve],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while len(lines) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            key, _, value = line.strip().partition("=")
            lines[key] = value
        assert set(lines) == {"SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY"}
        request = urllib.request.Request(
            f"{lines['SUPABASE_URL']}/auth/v1/token?grant_type=password",
            data=json.dumps({"email": "testuser1@example.com", "password": "password123"}).encode(),
            headers={"apikey": lines["SUPABASE_ANON_KEY"], "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.loads(resp.read())["token_type"] == "bearer"
        _supabase_js_against(lines, empty_dsn)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    secret_file = tmp_path / "reference" / "jwt_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert secret not in out and secret not in err


def _supabase_js_against(lines: dict[str, str], dsn: str) -> None:
    """The supabase-js flows against the served, generated data set (as a user would)."""
    if shutil.which("node") is None:
        return
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT c.id::text FROM conversations c WHERE c.participants @> ARRAY[u.id]"
            "        ORDER BY (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)"
            "        DESC LIMIT 1),"
            "       (SELECT c.id::text FROM conversations c"
            "        WHERE NOT c.participants @> ARRAY[u.id] LIMIT 1)"
            " FROM auth.users u WHERE u.email = 'testuser1@example.com'"
        ).fetchone()
        assert row is not None
        mine, other = row
        # compat.mjs pages 100 messages: make sure the busiest conversation has them.
        conn.execute(
            "INSERT INTO messages (conversation_id, sender_id, content)"
            " SELECT %s, u.id, 'filler ' || i || ' pizza' FROM auth.users u,"
            " generate_series(1, 110) i WHERE u.email = 'testuser1@example.com'",
            (mine,),
        )
    proc = subprocess.run(
        ["node", "compat.mjs"],
        cwd=Path(__file__).parent / "js",
        env={**os.environ, "SUPABASE_URL": lines["SUPABASE_URL"],
             "SUPABASE_ANON_KEY": lines["SUPABASE_ANON_KEY"], "CONV_MINE": mine,
             "CONV_OTHER": other},
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_serve_refuses_an_unreachable_database(tmp_path: Path) -> None:
    env = {**os.environ, "DEVICELAB_STATE": str(tmp_path)}
    dsn = "host=127.0.0.1 port=1 user=postgres dbname=x connect_timeout=2"
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, "backend", "serve", "--dsn", dsn, "--port", "0"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr


def test_a_port_in_use_says_so_and_leaves_no_storage_folder(scratch_dsn: str) -> None:
    import socket

    from backend_checks.reference.server import ReferenceServer
    from devicelab.errors import BackendUnavailable

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = ReferenceServer(scratch_dsn, port=port)
        root = server.ctx.storage_root
        with pytest.raises(BackendUnavailable, match="port is in use") as caught:
            server.start()
    assert "--port" in (caught.value.hint or "")
    assert not Path(root).exists()


def test_an_address_not_of_this_machine_says_so(scratch_dsn: str) -> None:
    # It said "check that PostgreSQL is running and the DSN is right".
    from backend_checks.reference.server import ReferenceServer
    from devicelab.errors import BackendUnavailable

    server = ReferenceServer(scratch_dsn, host="192.0.2.1", port=0)  # TEST-NET-1
    with pytest.raises(BackendUnavailable, match=r"cannot listen on 192\.0\.2\.1") as caught:
        server.start()
    assert "an address of this machine" in (caught.value.hint or "")


def test_the_managed_cluster_is_seeded_with_the_story_data_set_a_given_database_small(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # backend check and run judge whatever the managed cluster holds: seeded by a serve
    # that ran first, it held 5,000 messages and every check passed on those, silently.
    from backend_checks.managed import ManagedPostgres
    from backend_checks.reference.serve import SEED, prepare_database

    monkeypatch.setattr(ManagedPostgres, "ensure", lambda self: empty_dsn)
    monkeypatch.setattr("backend_checks.check.DEFAULT_SEED_MESSAGES", 3_000)
    said: list[str] = []
    assert prepare_database(None, say=said.append) == empty_dsn
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (3_000,)
    assert said == ["seeding the empty database (3,000 generated messages)"]
    assert SEED["messages"] != 3_000  # a given database gets the small set (the test above)
