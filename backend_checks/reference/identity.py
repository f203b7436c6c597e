"""Who is calling: the server context of an app and the JWT claims of a request.

Supabase clients send the project key as ``apikey`` (header or query parameter) and the
user's session token as ``Authorization: Bearer``; without a session, the bearer is the
anon key. The claims of the bearer (or of the apikey when no bearer is sent) decide the
database role.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from backend_checks.reference.context import AuthRejected, ServerContext

__all__ = ["CTX_KEY", "bearer_token", "context_of", "resolve_claims"]

CTX_KEY = web.AppKey("devicelab_reference_ctx", ServerContext)
_CLAIMS = web.RequestKey("devicelab_reference_claims", dict)


def context_of(request: web.Request) -> ServerContext:
    """The ServerContext of the app serving ``request``."""
    return request.app[CTX_KEY]


def bearer_token(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None when absent."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def resolve_claims(request: web.Request) -> dict[str, Any]:
    """The verified claims of the caller (bearer first, else apikey); cached per request.

    Raises AuthRejected when the token is missing, invalid, tampered or expired.
    """
    cached = request.get(_CLAIMS)
    if cached is not None:
        return dict(cached)
    ctx = context_of(request)
    token = bearer_token(request) or request.headers.get("apikey") or request.query.get("apikey")
    if not token:
        raise AuthRejected("no API key or bearer token", code="no_authorization")
    claims = ctx.verify_jwt(token)
    request[_CLAIMS] = claims
    return claims
