"""ServerContext.verify_jwt remembers verified tokens; what it remembers must not outlive
the token: expiry is judged on every use, and nothing refused is ever remembered."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backend_checks.reference.context import AuthRejected, ServerContext


def context(tmp_path: Path) -> ServerContext:
    return ServerContext.create("dbname=unused", tmp_path)


def test_a_remembered_token_still_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = context(tmp_path)
    now = time.time()
    token = ctx.sign({"sub": "u1", "role": "authenticated", "exp": int(now) + 60})
    assert ctx.verify_jwt(token)["sub"] == "u1"
    assert ctx.verify_jwt(token)["sub"] == "u1"  # remembered
    monkeypatch.setattr(time, "time", lambda: now + 63)
    assert ctx.verify_jwt(token)["sub"] == "u1"  # within the HTTP leeway (5 s)
    with pytest.raises(AuthRejected, match="expired"):
        ctx.verify_jwt(token, leeway=0)  # Realtime's: none
    monkeypatch.setattr(time, "time", lambda: now + 70)
    with pytest.raises(AuthRejected, match="expired"):
        ctx.verify_jwt(token)


def test_refused_tokens_are_refused_every_time(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    good = ctx.sign({"sub": "u1", "role": "authenticated", "exp": int(time.time()) + 60})
    ctx.verify_jwt(good)
    head, body, _sig = good.split(".")
    forged = f"{head}.{body}.{'A' * 43}"
    other_secret = ServerContext.create("dbname=unused", tmp_path)
    foreign = other_secret.sign(
        {"sub": "u1", "role": "authenticated", "exp": int(time.time()) + 60}
    )
    odd_role = ctx.sign({"sub": "u1", "role": "postgres", "exp": int(time.time()) + 60})
    for token in (forged, foreign, odd_role):
        for _ in range(2):
            with pytest.raises(AuthRejected):
                ctx.verify_jwt(token)


def test_callers_cannot_change_what_is_remembered(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    token = ctx.sign({"sub": "u1", "role": "authenticated", "exp": int(time.time()) + 60})
    ctx.verify_jwt(token)["role"] = "service_role"
    ctx.verify_jwt(token)["role"] = "service_role"
    assert ctx.verify_jwt(token)["role"] == "authenticated"
