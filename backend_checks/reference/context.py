"""The state every part of the reference server shares: database pool, keys, storage root.

One :class:`ServerContext` is built per server. Auth, REST, Storage and Realtime all take
it; nothing else is global. The JWT secret lives only here (never logged, never in a
``repr``): the anon and service-role keys are HS256 JWTs signed with it, as Supabase's are.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

if TYPE_CHECKING:
    import psycopg_pool

    from backend_checks.reference.catalog import Catalog

__all__ = [
    "API_ROLES",
    "AuthRejected",
    "ServerContext",
    "mint_api_key",
    "new_jwt_secret",
]

#: The database roles a JWT may ask for; anything else is refused before SQL runs.
API_ROLES = frozenset({"anon", "authenticated", "service_role"})

#: Verified tokens remembered at most (see ServerContext._verified).
_VERIFIED_MAX = 10_000

#: Ten years: Supabase's anon and service keys are long-lived too.
_API_KEY_LIFETIME_S = 10 * 365 * 24 * 3600


class AuthRejected(Exception):
    """A token was missing, malformed, tampered with, expired or names an unknown role.

    ``code`` is a short machine word (``bad_jwt``, ``jwt_expired``, ``no_authorization``).
    """

    def __init__(self, message: str, *, code: str = "bad_jwt") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def new_jwt_secret() -> str:
    """A fresh random HS256 secret (64 hex characters, as long as Supabase's)."""
    return secrets.token_hex(32)


def mint_api_key(secret: str, role: str, *, now: int | None = None) -> str:
    """An API key: a long-lived HS256 JWT with ``role`` (``anon`` or ``service_role``)."""
    issued = int(time.time()) if now is None else now
    claims = {"iss": "supabase-demo", "role": role, "iat": issued}
    claims["exp"] = issued + _API_KEY_LIFETIME_S
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class ServerContext:
    """What the handlers of one reference server share.

    ``pool`` is opened by the app's startup hook and closed by its cleanup hook;
    ``catalog`` is loaded at startup and reloaded when a name is not found.
    """

    dsn: str = field(repr=False)
    jwt_secret: str = field(repr=False)
    anon_key: str = field(repr=False)
    service_role_key: str = field(repr=False)
    storage_root: Path
    pool: psycopg_pool.AsyncConnectionPool | None = None
    #: Seconds an access token lives (GoTrue's default).
    jwt_expiry_s: int = 3600
    #: Connections the request pool may open (PostgREST's default pool is 10; the load
    #: checks drive more concurrent requests than that).
    pool_max_size: int = 20
    #: Public base URL once known (``http://127.0.0.1:P``), used as the JWT issuer.
    public_url: str = ""
    catalog: Catalog | None = None
    #: Refresh token -> (user id, session id); in memory: sessions end with the server.
    refresh_tokens: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    #: Rotated refresh token -> (the token that replaced it, monotonic time of rotation),
    #: kept for GoTrue's reuse interval only (see auth.py).
    rotated_refresh_tokens: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    #: Session ids logged out: their access tokens no longer reach ``/auth/v1/user``.
    ended_sessions: set[str] = field(default_factory=set, repr=False)
    #: Free-form slots for other parts (the realtime engine keeps its state here).
    extras: dict[str, Any] = field(default_factory=dict, repr=False)
    #: Token -> its claims, for tokens whose signature and role were checked (their
    #: expiry is checked on every use). An app sends the same two tokens (apikey and
    #: bearer) with every request: decoding them took a tenth of a list request's time.
    _verified: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def create(
        cls,
        dsn: str,
        storage_root: Path,
        *,
        jwt_secret: str | None = None,
        keys_issued_at: int | None = None,
    ) -> ServerContext:
        """A context with keys minted from ``jwt_secret`` (a new random one when None),
        issued at ``keys_issued_at`` (epoch seconds; now when None): the same secret and
        time give the same keys, so a restarted server prints the keys it printed before."""
        secret = jwt_secret or new_jwt_secret()
        return cls(
            dsn=dsn,
            jwt_secret=secret,
            anon_key=mint_api_key(secret, "anon", now=keys_issued_at),
            service_role_key=mint_api_key(secret, "service_role", now=keys_issued_at),
            storage_root=storage_root,
        )

    def verify_jwt(self, token: str, *, leeway: float = 5) -> dict[str, Any]:
        """The claims of ``token`` if it is ours, unexpired and names an API role.

        ``leeway`` is the clock skew (seconds) forgiven past ``exp``: HTTP requests allow
        a little; Realtime joins allow none, as their expiry timer fires at ``exp``.
        Raises AuthRejected otherwise (bad signature, malformed, expired, no or unknown role).
        """
        if not token:
            raise AuthRejected("no token given", code="no_authorization")
        known = self._verified.get(token)
        if known is not None:
            if time.time() > float(known["exp"]) + leeway:
                raise AuthRejected("JWT expired", code="jwt_expired")
            return dict(known)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.jwt_secret,
                algorithms=["HS256"],
                options={"verify_aud": False, "require": ["exp"]},
                leeway=leeway,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthRejected("JWT expired", code="jwt_expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthRejected(f"invalid JWT: {exc}", code="bad_jwt") from exc
        role = claims.get("role")
        if role not in API_ROLES:
            raise AuthRejected(f"JWT role {role!r} is not allowed", code="bad_jwt")
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()  # a load run's many users: start over, never grow
        self._verified[token] = dict(claims)
        return claims

    def sign(self, claims: dict[str, Any]) -> str:
        """``claims`` as an HS256 JWT signed with the server's secret."""
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    def is_api_key(self, key: str) -> bool:
        """True when ``key`` is one of our keys or any valid JWT of this server."""
        if secrets.compare_digest(key, self.anon_key) or secrets.compare_digest(
            key, self.service_role_key
        ):
            return True
        try:
            self.verify_jwt(key)
        except AuthRejected:
            return False
        return True
