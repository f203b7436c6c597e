"""``/auth/v1``: the part of GoTrue that supabase-js and supabase-py use for email users.

Routes: ``POST /token?grant_type=password|refresh_token``, ``POST /signup`` (auto-confirmed,
as a local Supabase with ``enable_confirmations = false``), ``GET /user``, ``POST /logout``,
``GET /settings``, ``GET /health``. Users are the rows of ``auth.users``; passwords are
checked by pgcrypto's ``crypt`` in the database (bcrypt hashes, as GoTrue stores them).
Access tokens are HS256 JWTs with GoTrue's claims; refresh tokens are random, single use
(rotated on refresh, with GoTrue's reuse interval) and kept in memory, so sessions end when
the server stops. A logged-out session's access tokens are refused by ``/user`` and
``/logout`` (403 ``session_not_found``), as GoTrue refuses them.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from psycopg import sql

from backend_checks.reference.context import AuthRejected, ServerContext
from backend_checks.reference.db import privileged
from backend_checks.reference.errors import ApiError, auth_error, read_json_object
from backend_checks.reference.identity import bearer_token, context_of

__all__ = ["add_routes", "create_user", "issue_session", "read_body", "user_by", "user_json"]

_CRYPT_SCHEMA = "auth.crypt_schema"
#: GoTrue's REFRESH_TOKEN_REUSE_INTERVAL default: a rotated refresh token presented again
#: this soon (two tabs refreshing at once, a reply lost) gets the current session.
REFRESH_TOKEN_REUSE_INTERVAL_S = 10.0


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


def user_json(row: dict[str, Any], *, signed_in_at: str | None = None) -> dict[str, Any]:
    """A GoTrue user object from an ``auth.users`` row (missing columns get defaults)."""
    now = datetime.now(UTC).isoformat()
    confirmed = row.get("email_confirmed_at") or row.get("confirmed_at") or row.get("created_at")
    app_meta = row.get("raw_app_meta_data") or {"provider": "email", "providers": ["email"]}
    return {
        "id": str(row["id"]),
        "aud": row.get("aud") or "authenticated",
        "role": row.get("role") or "authenticated",
        "email": row.get("email"),
        "email_confirmed_at": _iso(confirmed),
        "phone": row.get("phone") or "",
        "confirmed_at": _iso(confirmed),
        "last_sign_in_at": signed_in_at or _iso(row.get("last_sign_in_at")),
        "app_metadata": app_meta,
        "user_metadata": row.get("raw_user_meta_data") or {},
        "identities": [],
        "created_at": _iso(row.get("created_at")) or now,
        "updated_at": _iso(row.get("updated_at")) or now,
        "is_anonymous": False,
    }


def issue_session(
    ctx: ServerContext, user: dict[str, Any], session_id: str, *, refresh: str | None = None
) -> dict[str, Any]:
    """A GoTrue session for ``user``: access token, refresh token, expiry, user.

    ``refresh`` is a live refresh token of the session to hand out again; None makes one.
    """
    now = int(time.time())
    expires_at = now + ctx.jwt_expiry_s
    claims = {
        "aud": "authenticated",
        "exp": expires_at,
        "iat": now,
        "iss": f"{ctx.public_url}/auth/v1",
        "sub": user["id"],
        "email": user.get("email") or "",
        "phone": user.get("phone") or "",
        "app_metadata": user["app_metadata"],
        "user_metadata": user["user_metadata"],
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": session_id,
        "is_anonymous": False,
    }
    if refresh is None:
        refresh = secrets.token_urlsafe(18)
        ctx.refresh_tokens[refresh] = (user["id"], session_id)
    return {
        "access_token": ctx.sign(claims),
        "token_type": "bearer",
        "expires_in": ctx.jwt_expiry_s,
        "expires_at": expires_at,
        "refresh_token": refresh,
        "user": user,
    }


async def _crypt_function(ctx: ServerContext, name: str = "crypt") -> sql.Identifier:
    """pgcrypto's ``crypt`` (or ``name``, e.g. gen_salt) wherever the extension was
    installed (public, extensions...)."""
    schema = ctx.extras.get(_CRYPT_SCHEMA)
    if not isinstance(schema, str):
        async with privileged(ctx) as conn:
            row = await (
                await conn.execute(
                    "SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                    " WHERE p.proname = 'crypt' AND p.pronargs = 2 ORDER BY n.nspname LIMIT 1"
                )
            ).fetchone()
        if row is None:
            raise auth_error(500, "unexpected_failure", "pgcrypto is not installed")
        schema = str(row[0])
        ctx.extras[_CRYPT_SCHEMA] = schema
    return sql.Identifier(schema, name)


async def user_by(
    ctx: ServerContext,
    where: sql.Composable,
    params: list[Any],
    *,
    among: sql.Composable | None = None,
) -> dict[str, Any] | None:
    """The ``auth.users`` row matching ``where`` (fixed SQL with bound ``params``).

    ``among`` (its parameters first in ``params``) selects the candidate rows, evaluated
    before ``where`` is tested on them (a materialized CTE): a bcrypt comparison then runs
    on the one row of an email, never on every row a generic plan would test it on first.
    """
    rows: sql.Composable = sql.SQL("auth.users")
    if among is not None:
        rows = sql.SQL("(WITH c AS MATERIALIZED ({}) SELECT * FROM c)").format(among)
    async with privileged(ctx) as conn:
        stmt = sql.SQL("SELECT to_jsonb(u)::text FROM {} u WHERE {} LIMIT 1").format(rows, where)
        row = await (await conn.execute(stmt, params)).fetchone()
    if row is None:
        return None
    data: dict[str, Any] = json.loads(row[0])
    return data


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object body (``{}`` when empty); raises ApiError 400 (GoTrue shape)."""
    return await read_json_object(
        request, lambda why: auth_error(400, "validation_failed", f"Request body is {why}")
    )


async def _password_grant(request: web.Request, ctx: ServerContext) -> dict[str, Any]:
    body = await read_body(request)
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        raise auth_error(400, "validation_failed", "An email address and a password are needed")
    if "\x00" in email or "\x00" in password:
        raise auth_error(400, "invalid_credentials", "Invalid login credentials")
    crypt = await _crypt_function(ctx)
    among = sql.SQL(
        "SELECT * FROM auth.users WHERE lower(email) = lower(%s) AND encrypted_password IS NOT NULL"
    )
    where = sql.SQL("u.encrypted_password = {}(%s, u.encrypted_password)").format(crypt)
    row = await user_by(ctx, where, [email, password], among=among)
    if row is None:
        raise auth_error(400, "invalid_credentials", "Invalid login credentials")
    user = user_json(row, signed_in_at=datetime.now(UTC).isoformat())
    return issue_session(ctx, user, str(uuid.uuid4()))


def _check_email(email: Any) -> None:
    """Raise ApiError 400 unless ``email`` looks like an email address."""
    if not isinstance(email, str) or "@" not in email or "\x00" in email or len(email) > 255:
        raise auth_error(400, "validation_failed", "A valid email address is required")


def _check_password(password: Any) -> None:
    """Raise ApiError 422 unless ``password`` is a string of 6 characters at least."""
    if not isinstance(password, str) or len(password) < 6 or "\x00" in password:
        raise auth_error(422, "weak_password", "Password should be at least 6 characters.")


def _sub_user_gone() -> ApiError:
    """GoTrue's 404 for a token whose user no longer exists."""
    return auth_error(404, "user_not_found", "User from sub claim in JWT does not exist")


def _email_exists() -> ApiError:
    """GoTrue's 422 for an email another user has."""
    return auth_error(
        422, "email_exists", "A user with this email address has already been registered"
    )


async def create_user(
    ctx: ServerContext, email: Any, password: Any, metadata: Any, *, confirmed: bool = True
) -> dict[str, Any]:
    """Insert a user into ``auth.users`` (bcrypt through pgcrypto); returns its row.

    Raises ApiError 400 (bad email), 422 (weak password, email taken).
    """
    _check_email(email)
    _check_password(password)
    data = metadata if isinstance(metadata, dict) else {}
    crypt = await _crypt_function(ctx)
    gen_salt = await _crypt_function(ctx, "gen_salt")
    async with privileged(ctx) as conn:
        taken = await (
            await conn.execute("SELECT 1 FROM auth.users WHERE lower(email) = lower(%s)", (email,))
        ).fetchone()
        if taken:
            raise _email_exists()
        stmt = sql.SQL(
            "INSERT INTO auth.users (email, encrypted_password, email_confirmed_at,"
            " raw_user_meta_data) VALUES (lower(%s), {}(%s, {}('bf')),"
            " CASE WHEN %s THEN now() END, %s::jsonb) RETURNING to_jsonb(users)::text"
        ).format(crypt, gen_salt)
        row = await (
            await conn.execute(stmt, (email, password, confirmed, json.dumps(data)))
        ).fetchone()
    if row is None:
        raise auth_error(500, "unexpected_failure", "the user was not created")
    created: dict[str, Any] = json.loads(row[0])
    return created


async def _signup(request: web.Request) -> web.Response:
    """``POST /auth/v1/signup`` {email, password, data}: a new confirmed user and a session.

    Raises ApiError 422 when the email is taken or the password is shorter than 6.
    """
    ctx = context_of(request)
    body = await read_body(request)
    try:
        row = await create_user(ctx, body.get("email"), body.get("password"), body.get("data"))
    except ApiError as exc:
        if exc.body.get("error_code") == "email_exists":
            raise auth_error(422, "user_already_exists", "User already registered") from exc
        raise
    user = user_json(row, signed_in_at=datetime.now(UTC).isoformat())
    return web.json_response(issue_session(ctx, user, str(uuid.uuid4())))


def _forget_old_rotations(ctx: ServerContext) -> None:
    """Drop rotations older than the reuse interval (called on every refresh, so the map
    holds only the last interval's rotations)."""
    now = time.monotonic()
    rotated = ctx.rotated_refresh_tokens
    for old, (_, at) in list(rotated.items()):
        if now - at > REFRESH_TOKEN_REUSE_INTERVAL_S:
            del rotated[old]


def _reusable(ctx: ServerContext, token: str) -> str | None:
    """The live refresh token that replaced ``token``, if ``token`` was rotated within the
    reuse interval; None otherwise."""
    rotated = ctx.rotated_refresh_tokens
    if token not in rotated:
        return None
    current = token
    # Follow the chain: the replacement may itself have been rotated since.
    for _ in range(len(rotated) + 1):
        if current not in rotated:
            break
        current = rotated[current][0]
    return current if current in ctx.refresh_tokens else None


async def _refresh_grant(request: web.Request, ctx: ServerContext) -> dict[str, Any]:
    body = await read_body(request)
    token = body.get("refresh_token")
    if not isinstance(token, str):
        token = ""
    _forget_old_rotations(ctx)
    found = ctx.refresh_tokens.pop(token, None)
    if found is not None:
        # Rotate before any await, so a concurrent refresh of the same token finds the
        # rotation and shares its result.
        refresh = secrets.token_urlsafe(18)
        ctx.refresh_tokens[refresh] = found
        ctx.rotated_refresh_tokens[token] = (refresh, time.monotonic())
    else:
        # As GoTrue: a token reused within the interval gets the session's current
        # refresh token (no new rotation), so concurrent refreshes end with one live token.
        reused = _reusable(ctx, token)
        if reused is None:
            raise auth_error(
                400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
            )
        refresh, found = reused, ctx.refresh_tokens[reused]
    user_id, session_id = found
    row = await user_by(ctx, sql.SQL("u.id::text = %s"), [user_id])
    if row is None:
        raise auth_error(404, "user_not_found", "User not found")
    return issue_session(ctx, user_json(row), session_id, refresh=refresh)


async def _token(request: web.Request) -> web.Response:
    """``POST /auth/v1/token``: password sign-in or refresh; returns a session."""
    ctx = context_of(request)
    grant = request.query.get("grant_type", "")
    if grant == "password":
        session = await _password_grant(request, ctx)
    elif grant == "refresh_token":
        session = await _refresh_grant(request, ctx)
    else:
        raise auth_error(400, "validation_failed", f"unsupported grant_type {grant[:40]!r}")
    return web.json_response(session)


def _user_claims(request: web.Request) -> dict[str, Any]:
    ctx = context_of(request)
    token_text = bearer_token(request)
    if not token_text:
        raise auth_error(401, "no_authorization", "This endpoint requires a Bearer token")
    try:
        claims = ctx.verify_jwt(token_text)
    except AuthRejected as exc:
        raise auth_error(403, "bad_jwt", f"invalid JWT: {exc.message}") from exc
    if not claims.get("sub"):
        raise auth_error(403, "bad_jwt", "invalid claim: missing sub claim")
    if claims.get("session_id") in ctx.ended_sessions:
        raise auth_error(
            403, "session_not_found", "Session from session_id claim in JWT does not exist"
        )
    return claims


async def _get_user(request: web.Request) -> web.Response:
    """``GET /auth/v1/user``: the user of the bearer token."""
    claims = _user_claims(request)
    row = await user_by(context_of(request), sql.SQL("u.id::text = %s"), [str(claims["sub"])])
    if row is None:
        raise _sub_user_gone()
    return web.json_response(user_json(row))


async def _update_user(request: web.Request) -> web.Response:
    """``PUT /auth/v1/user`` {data, password, email} (auth-js ``updateUser``): merge
    ``data`` into the user metadata (a key set to null is removed), set a new password
    (the user's other sessions end, as GoTrue's does), or a new email (applied at once,
    as GoTrue does with mailer autoconfirm, which this server has). Returns the user.

    Raises ApiError 401/403 (token), 404 (user gone), 422 (weak or unchanged password,
    email taken, phone), 400 (malformed fields).
    """
    claims = _user_claims(request)
    ctx = context_of(request)
    body = await read_body(request)
    user_id = str(claims["sub"])
    row = await user_by(ctx, sql.SQL("u.id::text = %s"), [user_id])
    if row is None:
        raise _sub_user_gone()
    if body.get("phone"):
        raise auth_error(422, "phone_provider_disabled", "Phone logins are disabled")
    data, password, email = body.get("data"), body.get("password"), body.get("email")
    if data is not None and not isinstance(data, dict):
        raise auth_error(400, "validation_failed", "data must be a JSON object")
    sets: list[sql.Composable] = []
    params: list[Any] = []
    if data:
        metadata = dict(row.get("raw_user_meta_data") or {})
        for key, value in data.items():
            if value is None:
                metadata.pop(key, None)
            else:
                metadata[key] = value
        sets.append(sql.SQL("raw_user_meta_data = %s::jsonb"))
        params.append(json.dumps(metadata))
    if password is not None:
        sets.append(await _new_password(ctx, user_id, password, params))
    if email is not None and email != row.get("email"):
        sets.append(await _new_email(ctx, user_id, email, params))
    if sets:
        stmt = sql.SQL(
            "UPDATE auth.users SET {}, updated_at = now() WHERE id::text = %s"
            " RETURNING to_jsonb(users)::text"
        ).format(sql.SQL(", ").join(sets))
        async with privileged(ctx) as conn:
            updated = await (await conn.execute(stmt, [*params, user_id])).fetchone()
        if updated is None:
            raise _sub_user_gone()
        row = json.loads(updated[0])
        if password is not None:
            _end_other_sessions(ctx, user_id, claims.get("session_id"))
    return web.json_response(user_json(row))


async def _new_password(
    ctx: ServerContext, user_id: str, password: Any, params: list[Any]
) -> sql.Composable:
    """The SET of a new bcrypt password (its parameter appended to ``params``); raises
    ApiError 422 when it is shorter than 6 or the one the user has."""
    _check_password(password)
    crypt = await _crypt_function(ctx)
    same = await user_by(
        ctx,
        sql.SQL("u.encrypted_password = {}(%s, u.encrypted_password)").format(crypt),
        [user_id, password],
        among=sql.SQL("SELECT * FROM auth.users WHERE id::text = %s"),
    )
    if same is not None:
        raise auth_error(
            422, "same_password", "New password should be different from the old password."
        )
    params.append(password)
    gen_salt = await _crypt_function(ctx, "gen_salt")
    return sql.SQL("encrypted_password = {}(%s, {}('bf'))").format(crypt, gen_salt)


async def _new_email(
    ctx: ServerContext, user_id: str, email: Any, params: list[Any]
) -> sql.Composable:
    """The SET of a new email (its parameter appended to ``params``); raises ApiError
    400 (not an email) or 422 (another user has it)."""
    _check_email(email)
    async with privileged(ctx) as conn:
        taken = await (
            await conn.execute(
                "SELECT 1 FROM auth.users WHERE lower(email) = lower(%s) AND id::text <> %s",
                (email, user_id),
            )
        ).fetchone()
    if taken:
        raise _email_exists()
    params.append(email)
    return sql.SQL("email = lower(%s), email_confirmed_at = now()")


def _end_other_sessions(ctx: ServerContext, user_id: str, keep: Any) -> None:
    """End every session of ``user_id`` but ``keep`` (its refresh tokens go, its access
    tokens stop working here), as GoTrue does after a password change."""
    for refresh, (uid, sid) in list(ctx.refresh_tokens.items()):
        if uid == user_id and sid != keep:
            del ctx.refresh_tokens[refresh]
            ctx.ended_sessions.add(sid)


async def _logout(request: web.Request) -> web.Response:
    """``POST /auth/v1/logout?scope=``: end the session, the user's other sessions, or all
    of them (their refresh tokens go and their access tokens stop working here).

    Returns 204. Raises ApiError 401/403 for a missing, bad or already ended token.
    """
    claims = _user_claims(request)
    ctx = context_of(request)
    scope = request.query.get("scope", "global")
    user_id, session_id = str(claims["sub"]), claims.get("session_id")
    ended: set[str] = set()
    if scope != "others" and isinstance(session_id, str):
        ended.add(session_id)
    for refresh, (uid, sid) in list(ctx.refresh_tokens.items()):
        same_session = sid == session_id
        if uid == user_id and (scope == "global" or (scope == "local") == same_session):
            del ctx.refresh_tokens[refresh]
            ended.add(sid)
    ctx.ended_sessions |= ended
    return web.Response(status=204)


async def _settings(request: web.Request) -> web.Response:
    """``GET /auth/v1/settings``: what this GoTrue stand-in supports."""
    return web.json_response(
        {
            "external": {"email": True, "phone": False, "anonymous_users": False},
            "disable_signup": False,
            "mailer_autoconfirm": True,
            "phone_autoconfirm": False,
            "sms_provider": "",
            "saml_enabled": False,
        }
    )


async def _health(request: web.Request) -> web.Response:
    """``GET /auth/v1/health``."""
    return web.json_response(
        {"version": "devicelab-reference", "name": "GoTrue", "description": "reference"}
    )


async def _jwks(request: web.Request) -> web.Response:
    """``GET /auth/v1/.well-known/jwks.json``: no public keys (tokens are HS256, so
    clients verify them by asking ``/user``, as with a Supabase project on a shared secret)."""
    return web.json_response({"keys": []})


def add_routes(app: web.Application) -> None:
    """Register the ``/auth/v1`` routes on ``app``."""
    app.router.add_post("/auth/v1/token", _token)
    app.router.add_post("/auth/v1/signup", _signup)
    app.router.add_get("/auth/v1/user", _get_user)
    app.router.add_put("/auth/v1/user", _update_user)
    app.router.add_post("/auth/v1/logout", _logout)
    app.router.add_get("/auth/v1/settings", _settings)
    app.router.add_get("/auth/v1/health", _health)
    app.router.add_get("/auth/v1/.well-known/jwks.json", _jwks)
