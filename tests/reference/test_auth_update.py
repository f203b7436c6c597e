"""``PUT /auth/v1/user`` (auth-js ``updateUser``): metadata, password and email changes,
each on a user of its own signed up here (raw HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backend_checks.reference.server import ReferenceServer


@pytest.fixture(scope="module")
def http(server: ReferenceServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/auth/v1", timeout=15) as client:
        yield client


def _signup(http: httpx.Client, server: ReferenceServer, data: dict[str, Any]) -> dict[str, Any]:
    email = f"update-{uuid.uuid4().hex[:10]}@example.com"
    resp = http.post("/signup", json={"email": email, "password": "first-pass", "data": data},
                     headers={"apikey": server.anon_key})  # fmt: skip
    assert resp.status_code == 200, resp.text
    session: dict[str, Any] = resp.json()
    return session


def _sign_in(http: httpx.Client, server: ReferenceServer, email: str, password: str) -> int:
    return http.post(
        "/token", params={"grant_type": "password"}, json={"email": email, "password": password},
        headers={"apikey": server.anon_key},
    ).status_code  # fmt: skip


def _refresh(http: httpx.Client, server: ReferenceServer, session: dict[str, Any]) -> int:
    return http.post(
        "/token", params={"grant_type": "refresh_token"},
        json={"refresh_token": session["refresh_token"]}, headers={"apikey": server.anon_key},
    ).status_code  # fmt: skip


def _put(http: httpx.Client, server: ReferenceServer, session: dict[str, Any],
         body: dict[str, Any]) -> httpx.Response:  # fmt: skip
    headers = {"apikey": server.anon_key, "Authorization": f"Bearer {session['access_token']}"}
    return http.put("/user", json=body, headers=headers)


def test_metadata_is_merged_and_a_null_removes_a_key(
    http: httpx.Client, server: ReferenceServer
) -> None:
    session = _signup(http, server, {"name": "Ann", "theme": "dark"})
    resp = _put(http, server, session, {"data": {"theme": None, "status": "away"}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["user_metadata"] == {"name": "Ann", "status": "away"}
    headers = {"apikey": server.anon_key, "Authorization": f"Bearer {session['access_token']}"}
    assert (
        http.get("/user", headers=headers).json()["user_metadata"] == resp.json()["user_metadata"]
    )


def test_a_new_password_signs_in_and_ends_the_other_sessions(
    http: httpx.Client, server: ReferenceServer
) -> None:
    session = _signup(http, server, {})
    email = session["user"]["email"]
    other = http.post("/token", params={"grant_type": "password"},
                      json={"email": email, "password": "first-pass"},
                      headers={"apikey": server.anon_key}).json()  # fmt: skip
    assert _put(http, server, session, {"password": "short"}).json()["error_code"] == (
        "weak_password"
    )
    same = _put(http, server, session, {"password": "first-pass"})
    assert same.status_code == 422 and same.json()["error_code"] == "same_password"
    resp = _put(http, server, session, {"password": "second-pass"})
    assert resp.status_code == 200, resp.text
    assert _sign_in(http, server, email, "first-pass") == 400
    assert _sign_in(http, server, email, "second-pass") == 200
    # The session that changed it goes on; the other one is over.
    assert _refresh(http, server, session) == 200
    assert _refresh(http, server, other) == 400
    bearer = {"apikey": server.anon_key, "Authorization": f"Bearer {other['access_token']}"}
    ended = http.get("/user", headers=bearer)
    assert ended.status_code == 403


def test_a_new_email_applies_at_once_unless_another_user_has_it(
    http: httpx.Client, server: ReferenceServer
) -> None:
    session = _signup(http, server, {})
    taken = _put(http, server, session, {"email": "testuser1@example.com"})
    assert taken.status_code == 422 and taken.json()["error_code"] == "email_exists"
    new = f"moved-{uuid.uuid4().hex[:8]}@example.com"
    resp = _put(http, server, session, {"email": new.upper()})
    assert resp.status_code == 200, resp.text
    assert resp.json()["email"] == new
    assert _sign_in(http, server, new, "first-pass") == 200


def test_bad_updates_are_refused(http: httpx.Client, server: ReferenceServer) -> None:
    session = _signup(http, server, {})
    assert (
        http.put("/user", json={"data": {}}, headers={"apikey": server.anon_key}).status_code == 401
    )
    for body, status in (({"data": [1]}, 400), ({"email": "nope"}, 400), ({"phone": "+1"}, 422)):
        resp = _put(http, server, session, body)
        assert resp.status_code == status, (body, resp.text)
