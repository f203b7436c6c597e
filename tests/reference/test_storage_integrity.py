"""``/storage/v1`` under pressure: objects of the service role stay its own, two uploads
of one new key end as one object, and malformed list bodies are a 400 (raw HTTP against
the session's reference server)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from conftest import user_id

from backend_checks.reference.server import ReferenceServer

BASE = "/storage/v1/object"


@pytest.fixture(scope="module")
def http(server: ReferenceServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as client:
        yield client


def _user(server: ReferenceServer, n: int) -> dict[str, str]:
    claims = {"sub": user_id(n), "role": "authenticated", "aud": "authenticated",
              "exp": int(time.time()) + 600}  # fmt: skip
    return {"apikey": server.anon_key, "Authorization": f"Bearer {server.ctx.sign(claims)}"}


def _service(server: ReferenceServer) -> dict[str, str]:
    key = server.service_role_key
    return {"apikey": key, "Authorization": f"Bearer {key}"}


def test_a_user_cannot_overwrite_move_or_delete_the_service_role_s_object(
    http: httpx.Client, server: ReferenceServer
) -> None:
    """The service role's objects have no owner: only the service role may change them."""
    svc, user = _service(server), _user(server, 2)
    name = f"system/{uuid.uuid4().hex[:8]}.txt"
    up = http.post(f"{BASE}/media/{name}", content=b"official", headers=svc)
    assert up.status_code == 200, up.text
    over = http.post(f"{BASE}/media/{name}", content=b"defaced",
                     headers={**user, "x-upsert": "true"})  # fmt: skip
    assert over.status_code == 403, over.text
    assert http.put(f"{BASE}/media/{name}", content=b"defaced", headers=user).status_code == 403
    move = {"bucketId": "media", "sourceKey": name, "destinationKey": f"u2/{uuid.uuid4()}.txt"}
    moved = http.post(f"{BASE}/move", json=move, headers=user)
    assert moved.status_code == 403, moved.text
    removed = http.request("DELETE", f"{BASE}/media", json={"prefixes": [name]}, headers=user)
    assert removed.status_code == 200 and removed.json() == []
    # A signed upload URL carries its maker's rights, no more.
    signed = http.post(f"{BASE}/upload/sign/media/{name}",
                       headers={**user, "x-upsert": "true"}).json()  # fmt: skip
    via_url = http.put(f"/storage/v1{signed['url']}", content=b"defaced",
                       headers={"apikey": server.anon_key})  # fmt: skip
    assert via_url.status_code == 403, via_url.text
    # Still the service role's bytes, and the service role may still replace and delete.
    assert http.get(f"{BASE}/media/{name}", headers=user).content == b"official"
    assert http.put(f"{BASE}/media/{name}", content=b"v2", headers=svc).status_code == 200
    gone = http.request("DELETE", f"{BASE}/media", json={"prefixes": [name]}, headers=svc)
    assert [o["name"] for o in gone.json()] == [name]


def _waiting_on_locks(db: psycopg.Connection[Any]) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'devicelab-reference' AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


def test_two_uploads_of_one_new_key_store_one_object(
    server: ReferenceServer, scratch_dsn: str
) -> None:
    """As Supabase: one upload wins (200), the other is told the key is taken (409), and
    the object's metadata is the winner's bytes', with no stray file left on disk.

    A SHARE lock on storage.objects holds the first INSERT until both uploads wait inside
    their transactions: an unserialized pair would both have passed their "does it
    exist?" look by then."""
    name = f"race/{uuid.uuid4().hex[:8]}.bin"
    bodies = {1: b"A" * 100_000, 2: b"B" * 100_000}
    folder = server.ctx.storage_root / "media"
    files_before = set(folder.iterdir()) if folder.is_dir() else set()

    def upload(n: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return client.post(f"{BASE}/media/{name}", content=bodies[n],
                               headers={**_user(server, n), "x-upsert": "false"})  # fmt: skip

    with (
        psycopg.connect(scratch_dsn, autocommit=True) as watcher,
        psycopg.connect(scratch_dsn) as gate,
    ):
        gate.execute("LOCK TABLE storage.objects IN SHARE MODE")
        with ThreadPoolExecutor(2) as pool:
            futures = {n: pool.submit(upload, n) for n in bodies}
            deadline = time.monotonic() + 10
            while _waiting_on_locks(watcher) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            gate.rollback()
            answers = {n: f.result() for n, f in futures.items()}
    assert sorted(r.status_code for r in answers.values()) == [200, 409], {
        n: (r.status_code, r.text) for n, r in answers.items()
    }
    winner = next(n for n, r in answers.items() if r.status_code == 200)
    loser = answers[3 - winner].json()
    assert loser["error"] == "Duplicate" and loser["statusCode"] == "409"
    reader = _user(server, 1)
    with httpx.Client(base_url=server.url, timeout=15) as http:
        info = http.get(f"{BASE}/info/media/{name}", headers=reader).json()
        got = http.get(f"{BASE}/media/{name}", headers=reader).content
    assert info["id"] == answers[winner].json()["Id"]
    assert got == bodies[winner]
    assert info["etag"] == f'"{hashlib.md5(got, usedforsecurity=False).hexdigest()}"'
    assert set(folder.iterdir()) - files_before == {folder / info["id"]}


@pytest.mark.parametrize(
    "body",
    ['"limit": "ten"', '"offset": "x"', '"limit": [1]', '"offset": {"a": 1}', '"limit": 1e400',
     '"offset": NaN'],
)  # fmt: skip
def test_a_list_with_a_bad_limit_or_offset_is_a_400(
    http: httpx.Client, server: ReferenceServer, body: str
) -> None:
    resp = http.post(f"{BASE}/list/media", content=f'{{"prefix": "", {body}}}',
                     headers={**_user(server, 1), "Content-Type": "application/json"})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["statusCode"] == "400" and resp.json()["error"] == "InvalidRequest"


def test_a_list_takes_numbers_sent_as_strings(http: httpx.Client, server: ReferenceServer) -> None:
    user = _user(server, 1)
    folder = f"listed/{uuid.uuid4().hex[:8]}"
    for n in range(3):
        assert http.post(f"{BASE}/media/{folder}/{n}.txt", content=b"x", headers=user).is_success
    resp = http.post(f"{BASE}/list/media", json={"prefix": folder, "limit": "2", "offset": "1"},
                     headers=user)  # fmt: skip
    assert [f["name"] for f in resp.json()] == ["1.txt", "2.txt"]


def test_an_upsert_that_fails_in_the_database_leaves_the_object_as_it_was(
    http: httpx.Client, server: ReferenceServer, scratch_dsn: str
) -> None:
    """The file took the new bytes before the row's UPDATE ran: an UPDATE that failed left
    the old row (size, etag) over the new content for good."""
    svc = _service(server)
    name = f"fragile/{uuid.uuid4().hex[:8]}.txt"
    assert http.post(f"{BASE}/media/{name}", content=b"original", headers=svc).status_code == 200
    trigger = f"dl_refuse_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(scratch_dsn, autocommit=True) as db:
        db.execute(
            f"CREATE FUNCTION storage.{trigger}() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN IF NEW.name = '{name}' THEN RAISE EXCEPTION 'refused'; END IF;"
            f" RETURN NEW; END $$"
        )
        db.execute(f"CREATE TRIGGER {trigger} BEFORE UPDATE ON storage.objects"
                   f" FOR EACH ROW EXECUTE FUNCTION storage.{trigger}()")  # fmt: skip
        try:
            failed = http.put(f"{BASE}/media/{name}", content=b"replacement", headers=svc)
        finally:
            db.execute(f"DROP TRIGGER {trigger} ON storage.objects")
            db.execute(f"DROP FUNCTION storage.{trigger}()")
    assert failed.status_code >= 400, failed.text
    got = http.get(f"{BASE}/media/{name}", headers=svc)
    assert got.content == b"original"
    assert got.headers["etag"] == f'"{hashlib.md5(b"original").hexdigest()}"'
    folder = server.ctx.storage_root / "media"
    assert not [p for p in folder.rglob(".upload-*")], "a staged upload was left behind"


@pytest.mark.parametrize("sub", [None, "", "not-a-uuid"])
def test_an_authenticated_token_without_a_user_writes_nothing(
    http: httpx.Client, server: ReferenceServer, sub: str | None
) -> None:
    """A token of role authenticated with no usable ``sub`` owned nothing, so it passed for
    the service role: it could overwrite and delete every object (or got a 500)."""
    svc = _service(server)
    name = f"system/{uuid.uuid4().hex[:8]}.txt"
    assert http.post(f"{BASE}/media/{name}", content=b"official", headers=svc).status_code == 200
    claims: dict[str, Any] = {"role": "authenticated", "aud": "authenticated",
                              "exp": int(time.time()) + 600}  # fmt: skip
    if sub is not None:
        claims["sub"] = sub
    nobody = {"apikey": server.anon_key, "Authorization": f"Bearer {server.ctx.sign(claims)}"}
    over = http.put(f"{BASE}/media/{name}", content=b"defaced", headers=nobody)
    assert over.status_code == 403, over.text
    removed = http.request("DELETE", f"{BASE}/media", json={"prefixes": [name]}, headers=nobody)
    assert removed.status_code == 403, removed.text
    assert http.get(f"{BASE}/media/{name}", headers=svc).content == b"official"
