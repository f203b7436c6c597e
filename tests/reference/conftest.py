"""Fixtures of the reference-server tests: a scratch database with the messaging schema
and a small generated data set, and one ReferenceServer over it for the whole session.

The database is a uniquely named one on the local PostgreSQL (127.0.0.1:5432, or
$DEVICELAB_TEST_PG as a libpq DSN of a server where we may create databases); it is
dropped at the end (its name starts with $DEVICELAB_TEST_DB_PREFIX, ``dl_ref`` unless
set, so a shared server's scratch databases can be told apart). Tests skip with a reason
when no server answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from backend_checks.datagen import install_schema
from backend_checks.reference.server import ReferenceServer

ADMIN_DSN = os.environ.get("DEVICELAB_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")
DB_PREFIX = os.environ.get("DEVICELAB_TEST_DB_PREFIX", "dl_ref")
PASSWORD = "password123"
#: Conversations by the users (1-based testuser numbers) in them: user 4 is only in "34",
#: so RLS must keep them out of the others.
CONVERSATIONS = {"12": (1, 2), "13": (1, 3), "23": (2, 3), "34": (3, 4)}
MESSAGES_IN_12 = 120

_SEED_SQL = """
INSERT INTO auth.users (id, email, encrypted_password, email_confirmed_at)
SELECT ('00000000-0000-4000-8000-00000000000' || i)::uuid, 'testuser' || i || '@example.com',
       crypt('password123', gen_salt('bf', 4)), now()
FROM generate_series(1, 4) i;
INSERT INTO public.profiles (id, username, full_name, email)
SELECT id, split_part(email, '@', 1), 'Test ' || email, email FROM auth.users;
"""


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(f"{ADMIN_DSN} dbname=postgres", autocommit=True, connect_timeout=3)


def user_id(n: int) -> str:
    """The id of seeded user ``testuser<n>``."""
    return f"00000000-0000-4000-8000-00000000000{n}"


def conversation_id(key: str) -> str:
    """The id of seeded conversation ``key`` ("12", "13", "23", "34")."""
    return f"10000000-0000-4000-8000-0000000000{key}"


def _seed(conn: psycopg.Connection[Any]) -> None:
    """Schema (backend_checks/sql/schema.sql) plus four users and four conversations."""
    install_schema(conn)
    conn.execute(_SEED_SQL)
    for key, members in CONVERSATIONS.items():
        conn.execute(
            "INSERT INTO conversations (id, type, participants, created_by)"
            " VALUES (%s, 'direct', %s, %s)",
            (conversation_id(key), [user_id(m) for m in members], user_id(members[0])),
        )
        count = MESSAGES_IN_12 if key == "12" else 3
        conn.execute(
            "INSERT INTO messages (conversation_id, sender_id, content, created_at)"
            " SELECT %s, CASE WHEN i %% 2 = 0 THEN %s ELSE %s END::uuid,"
            " 'message ' || i || CASE WHEN i %% 10 = 0 THEN ' about pizza' ELSE ' hello' END,"
            " now() - make_interval(secs => %s - i)"
            " FROM generate_series(1, %s) i",
            (conversation_id(key), user_id(members[0]), user_id(members[1]), count, count),
        )
    conn.commit()


@contextlib.contextmanager
def fresh_database(label: str = "") -> Iterator[tuple[str, str]]:
    """A new empty database, ``(dsn, name)``, named ``$DEVICELAB_TEST_DB_PREFIX[_label]_<hex>``
    and dropped (FORCE) at the end. Skips the test when no server answers."""
    try:
        admin = _admin()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN_DSN}: {exc}")
    name = "_".join(part for part in (DB_PREFIX, label, uuid.uuid4().hex[:12]) if part)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_DSN} dbname={name}", name
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def scratch_dsn() -> Iterator[str]:
    """A fresh database with schema.sql and generated data; dropped afterwards."""
    with fresh_database() as (dsn, _):
        with psycopg.connect(dsn) as conn:
            _seed(conn)
        yield dsn


@pytest.fixture(scope="session")
def server(scratch_dsn: str) -> Iterator[ReferenceServer]:
    """A running ReferenceServer over the scratch database."""
    with ReferenceServer(scratch_dsn) as srv:
        yield srv


@pytest.fixture
def db(scratch_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A privileged connection to the scratch database (autocommit)."""
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        yield conn


def user_token(server: ReferenceServer, n: int, **extra: Any) -> str:
    """An access token of testuser<n> signed by ``server`` (10 minutes; ``extra`` claims
    override)."""
    claims = {"sub": user_id(n), "role": "authenticated", "aud": "authenticated",
              "exp": int(time.time()) + 600, **extra}  # fmt: skip
    return server.ctx.sign(claims)


@pytest.fixture(scope="module")
def http(server: ReferenceServer) -> Iterator[httpx.Client]:
    """A client of the server's REST API (``/rest/v1``)."""
    with httpx.Client(base_url=f"{server.url}/rest/v1", timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def h1(server: ReferenceServer) -> dict[str, str]:
    """The headers of testuser1's requests."""
    return {"apikey": server.anon_key, "Authorization": f"Bearer {user_token(server, 1)}"}


@pytest.fixture(scope="module")
def service(server: ReferenceServer) -> dict[str, str]:
    """The headers of the service role's requests."""
    key = server.service_role_key
    return {"apikey": key, "Authorization": f"Bearer {key}"}


JS_DIR = Path(__file__).parent / "js"


def run_script(script: str, server: ReferenceServer, **env: str) -> dict[str, object]:
    """Run ``js/<script>`` with node against ``server``; returns its JSON verdict line.
    Skips when node or supabase-js (npm install in tests/reference/js) is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (JS_DIR / "node_modules" / "@supabase" / "supabase-js").is_dir():
        pytest.skip("supabase-js is not installed (npm install in tests/reference/js)")
    proc = subprocess.run(
        [node, script],
        cwd=JS_DIR,
        env={**os.environ, "SUPABASE_URL": server.url, "SUPABASE_ANON_KEY": server.anon_key,
             **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no verdict from {script}: rc={proc.returncode} stderr={proc.stderr[-2000:]}"
    verdict: dict[str, object] = json.loads(lines[-1])
    return verdict


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for realtime frames")
        await asyncio.sleep(0.02)
