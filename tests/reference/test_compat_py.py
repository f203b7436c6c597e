"""supabase-py (the real PyPI client) against the reference server: the app's flows."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import MESSAGES_IN_12, PASSWORD, conversation_id, user_id
from supabase import Client, ClientOptions, create_client

from backend_checks.reference.server import ReferenceServer

MINE = conversation_id("12")
OTHER = conversation_id("34")


@pytest.fixture
def client(server: ReferenceServer) -> Iterator[Client]:
    """A supabase-py client signed in as testuser1."""
    sb = create_client(server.url, server.anon_key, options=ClientOptions(auto_refresh_token=False))
    sb.auth.sign_in_with_password({"email": "testuser1@example.com", "password": PASSWORD})
    yield sb
    sb.auth.sign_out()


def test_sign_in_returns_a_gotrue_session(server: ReferenceServer) -> None:
    sb = create_client(server.url, server.anon_key)
    res = sb.auth.sign_in_with_password({"email": "testuser2@example.com", "password": PASSWORD})
    assert res.session is not None and res.user is not None
    assert res.user.id == user_id(2)
    assert res.session.token_type == "bearer"
    assert res.session.expires_in > 0
    assert sb.auth.get_user().user.email == "testuser2@example.com"  # type: ignore[union-attr]
    refreshed = sb.auth.refresh_session()
    assert refreshed.session is not None
    assert refreshed.session.refresh_token != res.session.refresh_token


def test_wrong_password_is_refused(server: ReferenceServer) -> None:
    from supabase_auth.errors import AuthApiError

    sb = create_client(server.url, server.anon_key)
    with pytest.raises(AuthApiError) as err:
        sb.auth.sign_in_with_password({"email": "testuser1@example.com", "password": "nope"})
    assert err.value.status == 400


def test_conversation_list_and_rls(client: Client) -> None:
    rows = (
        client.table("conversation_list").select("*").order("last_message_at", desc=True).execute()
    )
    ids = {r["id"] for r in rows.data}
    assert MINE in ids and OTHER not in ids
    foreign = client.table("messages").select("id").eq("conversation_id", OTHER).execute()
    assert foreign.data == []


def test_page_messages_with_count(client: Client) -> None:
    page = (
        client.table("messages")
        .select("id,content,created_at", count="exact")  # type: ignore[arg-type]
        .eq("conversation_id", MINE)
        .order("created_at", desc=True)
        .range(50, 99)
        .execute()
    )
    assert len(page.data) == 50
    assert page.count is not None and page.count >= MESSAGES_IN_12
    stamps = [r["created_at"] for r in page.data]
    assert stamps == sorted(stamps, reverse=True)


def test_search_and_insert(client: Client) -> None:
    found = client.rpc("search_messages", {"p_query": "pizza", "p_limit": 3}).execute()
    assert 0 < len(found.data) <= 3
    assert all("pizza" in m["content"] for m in found.data)
    new = (
        client.table("messages")
        .insert({"conversation_id": MINE, "sender_id": user_id(1), "content": "from py"})
        .execute()
    )
    assert new.data[0]["content"] == "from py"


def test_insert_into_foreign_conversation_is_refused(client: Client) -> None:
    from postgrest.exceptions import APIError

    with pytest.raises(APIError) as err:
        client.table("messages").insert(
            {"conversation_id": OTHER, "sender_id": user_id(1), "content": "sneaky"}
        ).execute()
    assert err.value.code == "42501"


def test_storage_round_trip_and_signed_urls(client: Client, server: ReferenceServer) -> None:
    payload = bytes(range(256)) * (5 * 1024 * 4)  # 5 MiB
    path = "py/clip.bin"
    bucket = client.storage.from_("media")
    bucket.upload(path, payload, {"content-type": "video/mp4", "upsert": "true"})
    assert bucket.download(path) == payload
    names = [f["name"] for f in bucket.list("py")]
    assert "clip.bin" in names
    signed = bucket.create_signed_url(path, 60)["signedURL"]
    with urllib.request.urlopen(signed, timeout=10) as resp:
        assert resp.read() == payload
    many = bucket.create_signed_urls([path, "py/missing.bin"], 60)
    assert many[0]["signedURL"] and many[1]["error"]
    parts = urllib.parse.urlsplit(signed)
    token = urllib.parse.parse_qs(parts.query)["token"][0]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    bad = parts._replace(query=urllib.parse.urlencode({"token": forged})).geturl()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)
    assert err.value.code in (400, 403)
    bucket.remove([path])


def test_sign_up_then_sign_in(server: ReferenceServer) -> None:
    from supabase_auth.errors import AuthApiError

    sb = create_client(server.url, server.anon_key)
    email = f"new-{time.time_ns()}@example.com"
    res = sb.auth.sign_up({"email": email, "password": "secret-pw", "options": {"data": {"a": 1}}})
    assert res.user is not None and res.user.user_metadata == {"a": 1}
    assert res.session is not None
    again = create_client(server.url, server.anon_key)
    assert again.auth.sign_in_with_password({"email": email, "password": "secret-pw"}).user
    with pytest.raises(AuthApiError):
        again.auth.sign_up({"email": email, "password": "secret-pw"})


def test_admin_users(server: ReferenceServer) -> None:
    from supabase_auth.errors import AuthApiError

    admin = create_client(server.url, server.service_role_key).auth.admin
    email = f"admin-made-{time.time_ns()}@example.com"
    made = admin.create_user({"email": email, "password": "pw-123456", "email_confirm": True})
    assert made.user.email == email and made.user.email_confirmed_at is not None
    assert admin.get_user_by_id(made.user.id).user.email == email
    assert email in [u.email for u in admin.list_users(page=1, per_page=1000)]
    signed = create_client(server.url, server.anon_key).auth.sign_in_with_password(
        {"email": email, "password": "pw-123456"}
    )
    assert signed.user is not None
    admin.delete_user(made.user.id)
    with pytest.raises(AuthApiError):
        admin.get_user_by_id(made.user.id)
    with pytest.raises(AuthApiError):  # the anon key is no admin
        create_client(server.url, server.anon_key).auth.admin.list_users()
