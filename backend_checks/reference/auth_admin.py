"""``/auth/v1/admin/users``: GoTrue's admin API for the service role (auth-js ``auth.admin``).

Create (``POST``), list (``GET``, paged by ``page``/``per_page``), get and delete users.
Every route needs a bearer token whose role is ``service_role``, as on Supabase.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from psycopg import sql

from backend_checks.reference.auth import create_user, read_body, user_by, user_json
from backend_checks.reference.context import AuthRejected
from backend_checks.reference.db import privileged
from backend_checks.reference.errors import auth_error
from backend_checks.reference.identity import bearer_token, context_of

__all__ = ["add_routes"]

_MAX_PER_PAGE = 1000


def _require_admin(request: web.Request) -> None:
    token = bearer_token(request)
    try:
        claims = context_of(request).verify_jwt(token or "")
    except AuthRejected as exc:
        raise auth_error(401, "bad_jwt", f"invalid JWT: {exc.message}") from exc
    if claims.get("role") != "service_role":
        raise auth_error(403, "not_admin", "User not allowed")


def _user_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise auth_error(404, "user_not_found", "User not found") from exc


async def _create(request: web.Request) -> web.Response:
    """POST: {email, password, email_confirm, user_metadata} -> the new user."""
    _require_admin(request)
    body = await read_body(request)
    row = await create_user(
        context_of(request),
        body.get("email"),
        body.get("password"),
        body.get("user_metadata"),
        confirmed=bool(body.get("email_confirm")),
    )
    return web.json_response(user_json(row))


async def _list_users(request: web.Request) -> web.Response:
    """GET ?page=&per_page=: ``{users, aud}`` with an ``x-total-count`` header."""
    _require_admin(request)
    try:
        page = max(int(request.query.get("page", "1")), 1)
        per_page = min(max(int(request.query.get("per_page", "50")), 1), _MAX_PER_PAGE)
    except ValueError as exc:
        raise auth_error(400, "validation_failed", "page and per_page must be numbers") from exc
    async with privileged(context_of(request)) as conn:
        total_row = await (await conn.execute("SELECT count(*) FROM auth.users")).fetchone()
        rows = await (
            await conn.execute(
                "SELECT to_jsonb(u) FROM auth.users u ORDER BY u.created_at, u.id"
                " LIMIT %s OFFSET %s",
                (per_page, (page - 1) * per_page),
            )
        ).fetchall()
    users: list[dict[str, Any]] = [user_json(r[0]) for r in rows]
    total = int(total_row[0]) if total_row else 0
    return web.json_response(
        {"users": users, "aud": "authenticated"}, headers={"x-total-count": str(total)}
    )


async def _get_user(request: web.Request) -> web.Response:
    """GET /<id>: the user."""
    _require_admin(request)
    row = await user_by(context_of(request), sql.SQL("u.id::text = %s"), [_user_id(request)])
    if row is None:
        raise auth_error(404, "user_not_found", "User not found")
    return web.json_response(user_json(row))


async def _delete_user(request: web.Request) -> web.Response:
    """DELETE /<id>: remove the user (their rows go with them by the schema's cascades)."""
    _require_admin(request)
    user_id = _user_id(request)
    async with privileged(context_of(request)) as conn:
        gone = await (
            await conn.execute("DELETE FROM auth.users WHERE id = %s RETURNING id", (user_id,))
        ).fetchone()
    if gone is None:
        raise auth_error(404, "user_not_found", "User not found")
    ctx = context_of(request)
    for refresh, (uid, _) in list(ctx.refresh_tokens.items()):
        if uid == user_id:
            del ctx.refresh_tokens[refresh]
    return web.json_response({})


def add_routes(app: web.Application) -> None:
    """Register the admin routes on ``app``."""
    base = "/auth/v1/admin/users"
    app.router.add_post(base, _create)
    app.router.add_get(base, _list_users)
    app.router.add_get(f"{base}/{{id}}", _get_user)
    app.router.add_delete(f"{base}/{{id}}", _delete_user)
