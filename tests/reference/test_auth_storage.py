"""``/auth/v1`` and ``/storage/v1`` edge cases over raw HTTP: tokens, sessions, access
rules, path traversal, signed-URL expiry and tampering, CORS."""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.parse
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from conftest import PASSWORD, _admin, fresh_database, user_id

from backend_checks.reference import auth
from backend_checks.reference.errors import ApiError
from backend_checks.reference.server import ReferenceServer
from backend_checks.reference.storage_files import check_object_name, sign_token


@pytest.fixture(scope="module")
def http(server: ReferenceServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as client:
        yield client


def _sign_in(http: httpx.Client, server: ReferenceServer, n: int) -> dict[str, object]:
    resp = http.post(
        "/auth/v1/token",
        params={"grant_type": "password"},
        json={"email": f"testuser{n}@example.com", "password": PASSWORD},
        headers={"apikey": server.anon_key},
    )
    assert resp.status_code == 200, resp.text
    session: dict[str, object] = resp.json()
    return session


def _auth(server: ReferenceServer, token: object) -> dict[str, str]:
    return {"apikey": server.anon_key, "Authorization": f"Bearer {token}"}


def test_session_shape_refresh_and_logout(http: httpx.Client, server: ReferenceServer) -> None:
    session = _sign_in(http, server, 3)
    assert session["token_type"] == "bearer"
    assert isinstance(session["expires_at"], int) and session["expires_in"] == 3600
    claims = server.ctx.verify_jwt(str(session["access_token"]))
    assert claims["sub"] == user_id(3) and claims["role"] == "authenticated"
    assert claims["aud"] == "authenticated" and claims["email"] == "testuser3@example.com"
    user = http.get("/auth/v1/user", headers=_auth(server, session["access_token"]))
    assert user.json()["id"] == user_id(3)
    refreshed = http.post("/auth/v1/token", params={"grant_type": "refresh_token"},
                          json={"refresh_token": session["refresh_token"]},
                          headers={"apikey": server.anon_key})  # fmt: skip
    assert refreshed.status_code == 200
    reused = http.post("/auth/v1/token", params={"grant_type": "refresh_token"},
                       json={"refresh_token": session["refresh_token"]},
                       headers={"apikey": server.anon_key})  # fmt: skip
    # Within GoTrue's reuse interval the rotated token gets the current session back.
    new = refreshed.json()
    assert reused.status_code == 200 and reused.json()["refresh_token"] == new["refresh_token"]
    out = http.post("/auth/v1/logout", headers=_auth(server, new["access_token"]))
    assert out.status_code == 204
    after = http.post("/auth/v1/token", params={"grant_type": "refresh_token"},
                      json={"refresh_token": new["refresh_token"]},
                      headers={"apikey": server.anon_key})  # fmt: skip
    assert after.status_code == 400


def test_bad_credentials_and_tokens(http: httpx.Client, server: ReferenceServer) -> None:
    wrong = http.post("/auth/v1/token", params={"grant_type": "password"},
                      json={"email": "testuser1@example.com", "password": "x"},
                      headers={"apikey": server.anon_key})  # fmt: skip
    assert wrong.status_code == 400 and wrong.json()["error_code"] == "invalid_credentials"
    nobody = http.post("/auth/v1/token", params={"grant_type": "password"},
                       json={"email": "nobody@example.com", "password": PASSWORD},
                       headers={"apikey": server.anon_key})  # fmt: skip
    assert nobody.status_code == 400
    expired = server.ctx.sign({"sub": user_id(1), "role": "authenticated",
                               "exp": int(time.time()) - 30})  # fmt: skip
    assert http.get("/auth/v1/user", headers=_auth(server, expired)).status_code == 403
    other_secret = server.ctx.sign({"role": "service_role", "exp": 9999999999})[:-4] + "abcd"
    assert http.get("/rest/v1/messages", headers=_auth(server, other_secret)).status_code == 401
    fake_role = server.ctx.sign({"role": "postgres", "exp": int(time.time()) + 60})
    assert http.get("/rest/v1/messages", headers=_auth(server, fake_role)).status_code == 401
    assert http.get("/rest/v1/messages", headers={"apikey": "nope"}).status_code == 401


def test_cors_preflight(http: httpx.Client) -> None:
    resp = http.options("/rest/v1/messages", headers={
        "Origin": "capacitor://localhost", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "apikey,authorization,x-client-info,prefer"})  # fmt: skip
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "capacitor://localhost"
    assert "prefer" in resp.headers["Access-Control-Allow-Headers"]
    assert "PATCH" in resp.headers["Access-Control-Allow-Methods"]
    get = http.get("/rest/v1/messages", headers={"Origin": "http://localhost"})
    assert "Content-Range" in get.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize(
    "name",
    ["../x", "a/../../x", "/abs", "a//b", "a/./b", "a\\..\\b", "a\x00b", "..", "a/\x1fb", ""],
)
def test_object_names_refused(name: str) -> None:
    with pytest.raises(ApiError) as err:
        check_object_name(name)
    assert err.value.status == 400


def test_storage_rules(http: httpx.Client, server: ReferenceServer) -> None:
    s1 = _sign_in(http, server, 1)
    s2 = _sign_in(http, server, 2)
    h1, h2 = _auth(server, s1["access_token"]), _auth(server, s2["access_token"])
    anon = {"apikey": server.anon_key}
    base = "/storage/v1/object"
    up = http.post(f"{base}/media/rules/a.txt", content=b"one", headers={**h1,
                   "Content-Type": "text/plain"})  # fmt: skip
    assert up.status_code == 200 and up.json()["Key"] == "media/rules/a.txt"
    assert http.post(f"{base}/media/rules/b.txt", content=b"x", headers=anon).status_code == 403
    assert http.get(f"{base}/media/rules/a.txt", headers=anon).status_code == 400
    assert http.get(f"{base}/public/media/rules/a.txt").status_code == 400  # media is private
    got = http.get(f"{base}/authenticated/media/rules/a.txt", headers=h2)
    assert got.content == b"one" and got.headers["Content-Type"].startswith("text/plain")
    # Another user may read but not overwrite or delete the object.
    over = http.post(
        f"{base}/media/rules/a.txt", content=b"two", headers={**h2, "x-upsert": "true"}
    )
    assert over.status_code == 403
    assert http.request("DELETE", f"{base}/media", json={"prefixes": ["rules/a.txt"]},
                        headers=h2).json() == []  # fmt: skip
    put = http.put(f"{base}/media/rules/a.txt", content=b"three", headers=h1)
    assert put.status_code == 200
    assert http.get(f"{base}/media/rules/a.txt", headers=h1).content == b"three"
    for bad in ("%2e%2e/%2e%2e/etc/passwd", "rules/..%2f..%2fx", "rules%5c..%5cx"):
        resp = http.get(f"{base}/media/{bad}", headers=h1)
        assert resp.status_code in (400, 404), (bad, resp.status_code)
    info = http.get(f"{base}/info/media/rules/a.txt", headers=h1).json()
    assert info["size"] == 5
    # One ETag everywhere: the stored MD5, quoted (aiohttp would send its own mtime tag).
    assert info["etag"] == f'"{hashlib.md5(b"three", usedforsecurity=False).hexdigest()}"'
    assert http.get(f"{base}/media/rules/a.txt", headers=h1).headers["ETag"] == info["etag"]
    part = http.get(f"{base}/media/rules/a.txt", headers={**h1, "Range": "bytes=1-2"})
    assert part.status_code == 206 and part.content == b"hr"
    assert part.headers["ETag"] == info["etag"]
    # Signed URLs: good, expired, for another object, tampered.
    secret = server.ctx.jwt_secret
    good = http.post(f"{base}/sign/media/rules/a.txt", json={"expiresIn": 30}, headers=h1).json()
    assert http.get(f"/storage/v1{good['signedURL']}").content == b"three"
    expired = sign_token(secret, "media", "rules/a.txt", -10)
    resp = http.get(f"{base}/sign/media/rules/a.txt", params={"token": expired})
    assert resp.status_code == 400 and resp.json()["error"] == "InvalidJWT"
    elsewhere = sign_token(secret, "media", "rules/other.txt", 30)
    assert (
        http.get(f"{base}/sign/media/rules/a.txt", params={"token": elsewhere}).status_code == 400
    )
    forged = sign_token("not-the-secret-" * 4, "media", "rules/a.txt", 30)
    assert http.get(f"{base}/sign/media/rules/a.txt", params={"token": forged}).status_code == 400
    assert http.get(f"{base}/sign/media/rules/a.txt").status_code == 400
    assert http.post(f"{base}/sign/media/rules/none.txt", json={"expiresIn": 30},
                     headers=h1).status_code == 404  # fmt: skip
    # Buckets: anyone with a key may look, only the service role may create.
    assert http.get("/storage/v1/bucket/media", headers=h1).json()["public"] is False
    assert http.get("/storage/v1/bucket/nope", headers=h1).status_code == 404
    assert http.post("/storage/v1/bucket", json={"id": "x"}, headers=h1).status_code == 403
    svc = {"apikey": server.service_role_key, "Authorization": f"Bearer {server.service_role_key}"}
    assert http.post("/storage/v1/bucket", json={"id": "pub", "public": True},
                     headers=svc).status_code == 200  # fmt: skip
    assert http.post(f"{base}/pub/p.txt", content=b"hi", headers=h1).status_code == 200
    assert http.get(f"{base}/public/pub/p.txt").content == b"hi"
    listed = http.post(f"{base}/list/media", json={"prefix": "rules", "limit": 10}, headers=h1)
    assert [f["name"] for f in listed.json()] == ["a.txt"]
    removed = http.request("DELETE", f"{base}/media", json={"prefixes": ["rules/a.txt"]},
                           headers=h1)  # fmt: skip
    assert [f["name"] for f in removed.json()] == ["rules/a.txt"]
    assert http.get(f"{base}/media/rules/a.txt", headers=h1).status_code == 404


def test_bucket_admin(http: httpx.Client, server: ReferenceServer) -> None:
    svc = {"apikey": server.service_role_key, "Authorization": f"Bearer {server.service_role_key}"}
    assert http.post("/storage/v1/bucket", json={"id": "tmpb"}, headers=svc).status_code == 200
    dup = http.post("/storage/v1/bucket", json={"id": "tmpb"}, headers=svc)
    assert dup.status_code == 409
    changed = http.put("/storage/v1/bucket/tmpb", json={"public": True, "file_size_limit": 4},
                       headers=svc)  # fmt: skip
    assert changed.status_code == 200
    big = http.post("/storage/v1/object/tmpb/big.bin", content=b"12345", headers=svc)
    assert big.status_code == 413
    assert http.post("/storage/v1/object/tmpb/ok.bin", content=b"1234", headers=svc).is_success
    assert http.get("/storage/v1/object/public/tmpb/ok.bin").content == b"1234"
    busy = http.delete("/storage/v1/bucket/tmpb", headers=svc)
    assert busy.status_code == 409
    assert http.post("/storage/v1/bucket/tmpb/empty", headers=svc).status_code == 200
    assert http.delete("/storage/v1/bucket/tmpb", headers=svc).status_code == 200
    names = [b["id"] for b in http.get("/storage/v1/bucket", headers=svc).json()]
    assert "tmpb" not in names and "media" in names


def test_names_with_spaces_and_unicode(http: httpx.Client, server: ReferenceServer) -> None:
    session = _sign_in(http, server, 1)
    headers = _auth(server, session["access_token"])
    name = "uni code/a b é 😀.txt"
    quoted = urllib.parse.quote(name)
    assert http.post(f"/storage/v1/object/media/{quoted}", content=b"u", headers=headers).is_success
    signed = http.post(f"/storage/v1/object/sign/media/{quoted}", json={"expiresIn": 60},
                       headers=headers).json()["signedURL"]  # fmt: skip
    path, _, query = signed.partition("?")
    got = http.get(f"/storage/v1{urllib.parse.quote(path)}?{query}")
    assert got.status_code == 200 and got.content == b"u"
    listed = http.post("/storage/v1/object/list/media", json={"prefix": "uni code"},
                       headers=headers).json()  # fmt: skip
    assert [f["name"] for f in listed] == ["a b é 😀.txt"]


def test_an_upload_cut_midway_stores_nothing_and_logs_no_traceback(
    http: httpx.Client, server: ReferenceServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that gives up an upload (a timed-out probe, a link cut by the proxy) is
    not a server error: no traceback in the log, no object left half-written."""
    import logging
    import socket
    import time

    session = _sign_in(http, server, 1)
    headers = _auth(server, session["access_token"])
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        "POST /storage/v1/object/media/cut/half.bin HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\napikey: {headers['apikey']}\r\n"
        f"Authorization: {headers['Authorization']}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
    )
    with caplog.at_level(logging.INFO, logger="backend_checks.reference"):
        with socket.create_connection((host, int(port))) as client:
            client.sendall(head.encode() + b"x" * 100_000)
            time.sleep(0.3)  # the server is reading the body
        deadline = time.monotonic() + 5
        while "client went away" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "client went away during POST /storage/v1/object/media/cut/half.bin" in caplog.text
    assert "Traceback" not in caplog.text and "unhandled error" not in caplog.text
    assert http.get("/storage/v1/object/media/cut/half.bin", headers=headers).status_code == 404


def test_a_sign_in_checks_one_password_hash_whatever_plan_the_server_picks() -> None:
    """bcrypt runs on the signing-in email's row only. Under a generic plan (the server's
    choice for a statement prepared and run many times) the old single WHERE ran crypt()
    on every row it scanned before the email test: 1,000 users made a sign-in take
    0.1-0.8 s and `backend load --reference --users 1000` fail."""
    from backend_checks.datagen import install_schema

    users, sign_ins = 60, 30
    with fresh_database("crypt") as (dsn, name):
        with _admin() as admin:
            # Every prepared statement on a generic plan, and crypt()'s calls counted.
            admin.execute(f'ALTER DATABASE "{name}" SET plan_cache_mode = force_generic_plan')
            admin.execute(f"ALTER DATABASE \"{name}\" SET track_functions = 'all'")
        with psycopg.connect(dsn) as conn:
            install_schema(conn)
            conn.execute("SET track_functions = 'none'")  # count the server's calls only
            conn.execute(
                "INSERT INTO auth.users (id, email, encrypted_password, email_confirmed_at)"
                " SELECT gen_random_uuid(), 'testuser' || i || '@example.com',"
                " crypt(%s, gen_salt('bf', 4)), now() FROM generate_series(1, %s) i",
                (PASSWORD, users),
            )
        with (
            ReferenceServer(dsn, pool_max_size=1) as srv,
            httpx.Client(base_url=srv.url, timeout=15) as client,
        ):
            for _ in range(sign_ins):
                _sign_in(client, srv, users)  # the last user: the whole table before it
        calls = 0
        deadline = time.monotonic() + 5  # a closed backend flushes its counters as it exits
        while calls == 0 and time.monotonic() < deadline:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions"
                    " WHERE funcname = 'crypt'"
                ).fetchone()
            calls = int(row[0]) if row else 0
            time.sleep(0.1)
        assert 0 < calls <= sign_ins, calls


def _refresh(http: httpx.Client, server: ReferenceServer, token: object) -> httpx.Response:
    return http.post(
        "/auth/v1/token",
        params={"grant_type": "refresh_token"},
        json={"refresh_token": token},
        headers={"apikey": server.anon_key},
    )


def test_concurrent_refreshes_of_one_token_share_the_new_session(
    http: httpx.Client, server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _sign_in(http, server, 2)["refresh_token"]

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            calls = [
                client.post(
                    "/auth/v1/token",
                    params={"grant_type": "refresh_token"},
                    json={"refresh_token": first},
                    headers={"apikey": server.anon_key},
                )
                for _ in range(2)
            ]
            return list(await asyncio.gather(*calls))

    answers = asyncio.run(both())
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    assert answers[0].json()["refresh_token"] == answers[1].json()["refresh_token"]
    current = answers[0].json()["refresh_token"]
    # The chain is followed: after one more rotation the first token still leads to the
    # live one, and that one is never rotated by a reuse.
    second = _refresh(http, server, current).json()["refresh_token"]
    assert _refresh(http, server, first).json()["refresh_token"] == second
    assert _refresh(http, server, second).status_code == 200
    # Past the interval a rotated token is refused again.
    monkeypatch.setattr(auth, "REFRESH_TOKEN_REUSE_INTERVAL_S", 0.0)
    stale = _refresh(http, server, current)
    assert stale.status_code == 400 and stale.json()["error_code"] == "refresh_token_not_found"


def test_an_ended_session_s_access_token_is_refused_by_user(
    http: httpx.Client, server: ReferenceServer
) -> None:
    kept, ended = _sign_in(http, server, 1), _sign_in(http, server, 1)
    old = ended["access_token"]
    assert http.get("/auth/v1/user", headers=_auth(server, old)).status_code == 200
    out = http.post("/auth/v1/logout", params={"scope": "local"}, headers=_auth(server, old))
    assert out.status_code == 204
    gone = http.get("/auth/v1/user", headers=_auth(server, old))
    assert gone.status_code == 403, gone.text
    assert gone.json()["error_code"] == "session_not_found"
    assert _refresh(http, server, ended["refresh_token"]).status_code == 400
    # scope=local ends only that session; global ends the rest.
    other = kept["access_token"]
    assert http.get("/auth/v1/user", headers=_auth(server, other)).status_code == 200
    http.post("/auth/v1/logout", headers=_auth(server, other))
    assert http.get("/auth/v1/user", headers=_auth(server, other)).status_code == 403
