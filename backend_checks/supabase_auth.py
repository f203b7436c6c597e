"""Signing a test user in to a Supabase API, and keeping the project's secrets out of what
is shown.

One reading of Auth's answer to ``POST /auth/v1/token?grant_type=password`` for every
command (:func:`sign_in_error`), so ``backend check --supabase-url`` and ``backend load
--url`` end the same failure with the same exit code (DESIGN.md):

- exit 2 (:class:`SignInRefused`, the user fixes an option): no Auth endpoint at the URL
  (404), an answer no Supabase API gives, the anon key refused, the test user's email or
  password refused (400/401/422, "Invalid login credentials");
- exit 3 (BackendUnavailable, the server is not ready): sign-ins rate-limited (429), a
  server error (5xx: the API is broken or its database is down), no answer at all.

No message holds the anon key, the password or a token, even when the API echoes the
request back. :func:`sign_in` is ``backend check``'s sign-in (aiohttp); the load's
preflight (``backend_checks.load.api``) reads its answer with the same function.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend_checks.base_url import BASE_HINT, URL_OPTION
from backend_checks.db import redact
from devicelab.errors import (
    ApiUnreachable,
    BackendUnavailable,
    DeviceLabError,
    SignInRefused,
)

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "TOKEN_PATH",
    "ApiUnreachable",
    "Session",
    "SignInFlags",
    "SignInRefused",
    "SupabaseProject",
    "answer",
    "error_text",
    "public_url",
    "redact_known",
    "redact_secrets",
    "sign_in",
    "sign_in_error",
]

#: Auth's password grant, under the project's base URL.
TOKEN_PATH = "/auth/v1/token"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SupabaseProject(_Model):
    """Where the checks run: a Supabase API (real or reference) and a test user."""

    url: str = Field(description="API base URL, e.g. https://abc.supabase.co")
    anon_key: str = Field(repr=False)
    email: str = Field(description="a test user who is in at least one conversation")
    password: str = Field(repr=False)
    kind: Literal["reference", "supabase"] = "supabase"


class Session(_Model):
    """A signed-in test user: the JWT and the ids the checks write with."""

    access_token: str = Field(repr=False)
    user_id: str
    conversation_id: str


@dataclass(frozen=True)
class SignInFlags:
    """The options a command takes the sign-in's inputs from, named in the hints."""

    url: str
    key: str
    credentials: str


#: ``backend check``'s options (this module's :func:`sign_in` is the check's).
CHECK_FLAGS = SignInFlags(
    url="--supabase-url", key="--anon-key", credentials="--test-email and --test-password"
)

#: Secrets that may appear in an error's text: JWTs (Supabase keys and access tokens are
#: JWTs) and the ``apikey`` query parameter of the websocket URL.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_APIKEY = re.compile(r"(?P<pre>[?&](?:apikey|access_token|token)=)[^&\s'\"]*", re.I)


def redact_secrets(text: str, project: SupabaseProject, *more: str) -> str:
    """``text`` without the project's anon key, the test user's password, ``more`` (tokens),
    any JWT, ``apikey=`` value or URL password: results.json and stdout carry error texts,
    and aiohttp's carry the websocket URL with its ``?apikey=``."""
    return redact_known(text, project.anon_key, project.password, *more)


def redact_known(text: str, *secrets: str) -> str:
    """``text`` without ``secrets`` (a key, a password, a token: each one of 4 characters
    or more, wherever it appears, as an API's error may echo the request back), any JWT,
    ``apikey=`` value or URL password. Returns the text to show."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _APIKEY.sub(lambda m: m.group("pre") + "***", _JWT.sub("***", text))
    return redact(text)


def public_url(url: str) -> str:
    """``url`` as results may show it: no user, no password, no query."""
    return redact(url.split("?", 1)[0])


def error_text(body: Any, *secrets: str) -> str:
    """The error an API's JSON answer ``body`` states (GoTrue's and PostgREST's fields),
    without ``secrets`` (it may echo the request back), any JWT or password; cut to 200
    characters after masking, so no piece of a secret is left whole enough to show.
    Returns "" when ``body`` is not a JSON object."""
    if not isinstance(body, dict):
        return ""
    keys = ("error", "error_code", "code", "message", "msg", "error_description")
    return redact_known(" ".join(str(body[k]) for k in keys if body.get(k)), *secrets)[:200]


#: Auth's answers to a wrong email or password (GoTrue: 400 invalid_grant /
#: invalid_credentials, "Invalid login credentials").
_BAD_LOGIN = ("invalid_credentials", "invalid_grant", "invalid login credentials")
_SERVER_HINT = (
    "the API answers but is broken, or its database is down: check the server and its"
    " database (for the managed cluster: a `devicelab backend stop` meanwhile?), then run again"
)


def sign_in_error(
    status: int,
    body: Any,
    *,
    base: str,
    email: str,
    flags: SignInFlags,
    secrets: tuple[str, ...] = (),
    content_type: str = "",
) -> DeviceLabError | None:
    """What Auth's answer to a password sign-in means: ``status`` and ``body`` (the parsed
    JSON, None when the answer was not JSON; ``content_type`` then names what it was) of
    ``POST <base>/auth/v1/token?grant_type=password`` for ``email``.

    Returns None when the user is signed in (200 with an ``access_token``), else the error
    to raise: BackendUnavailable (exit 3) for a rate limit (429) or a server error (5xx),
    SignInRefused (exit 2) for no Auth endpoint (404), the anon key refused, the email or
    password refused, or an answer no Supabase Auth gives. The hints name ``flags``; no
    message holds ``secrets`` (the key, the password). Raises nothing.
    """
    if status == 200 and isinstance(body, dict) and body.get("access_token"):
        return None
    shown = public_url(base)
    said = error_text(body, *secrets)
    where = f"({TOKEN_PATH}: HTTP {status})"
    status_said = where + (f": {said}" if said else "")
    not_api = ""
    if body is None:  # an HTML page of a proxy, or of something that is no API
        kind = content_type.split(";", maxsplit=1)[0].strip() or "no content type"
        not_api = f"POST {shown}{TOKEN_PATH} answered {status} ({kind}), not a Supabase API reply"
    if status == 429:
        return BackendUnavailable(
            f"the API at {shown} rate-limits sign-ins {status_said}",
            hint="raise Authentication > Rate Limits > sign-ins for the test, or wait",
        )
    if status >= 500:
        # The API is up but cannot answer: the credentials were never judged.
        return BackendUnavailable(
            not_api
            or f"sign-in of {email} at {shown} failed ({status}): {said or 'no reason'} {where}",
            hint=_SERVER_HINT,
        )
    url_hint = f"check {flags.url}: {BASE_HINT}"
    if status == 404:  # no Auth there: the URL, not the credentials, is wrong
        return SignInRefused(f"the API at {shown} has no Auth endpoint {where}", hint=url_hint)
    if not_api:
        return SignInRefused(not_api, hint=url_hint)
    lowered = (said + " " + json.dumps(body)).lower()
    bad_login = any(marker in lowered for marker in _BAD_LOGIN)
    if not bad_login and (status == 401 or "api key" in lowered):
        return SignInRefused(
            f"the API at {shown} refused the anon key {status_said}",
            hint=f"give the project's anon key ({flags.key} or SUPABASE_ANON_KEY)",
        )
    if bad_login or status in (400, 401, 422):
        return SignInRefused(
            f"{email} cannot sign in at {shown} {status_said}",
            hint=f"check {flags.credentials}, or generate the test users "
            "(devicelab backend datagen --allow-writes)",
        )
    return SignInRefused(
        f"the API at {shown} did not answer the sign-in as Supabase Auth does {status_said}",
        hint=url_hint,
    )


async def answer(resp: aiohttp.ClientResponse) -> tuple[int, Any]:
    """(status, parsed JSON or None when the body is not JSON) of a response."""
    text = await resp.text(errors="replace")
    try:
        return resp.status, json.loads(text)
    except ValueError:  # an HTML error page of a proxy or a wrong URL
        return resp.status, None


def _not_api(method: str, url: str, status: int, resp: aiohttp.ClientResponse) -> str:
    kind = resp.headers.get("Content-Type", "no content type").split(";")[0]
    return f"{method} {public_url(url)} answered {status} ({kind}), not a Supabase API reply"


def _sign_in_timeout(session: aiohttp.ClientTimeout) -> aiohttp.ClientTimeout:
    """The sign-in's timeout under a session's: the connection (name lookup included)
    and each wait for an answer bounded by the session's answer wait (else its total), so
    the one that fires says whether the API took the connection (a bare total timeout
    cannot say); the total, doubled, still bounds an answer that trickles in."""
    import aiohttp

    limit = session.sock_read or session.total or 30.0
    return aiohttp.ClientTimeout(
        total=session.total * 2 if session.total else None,
        connect=session.connect or session.sock_connect or limit,
        sock_read=limit,
    )


def _unreachable(
    exc: BaseException, project: SupabaseProject, timeout: aiohttp.ClientTimeout
) -> ApiUnreachable:
    """The ApiUnreachable ``exc`` (a failed call to ``project``'s API under ``timeout``)
    means: no connection, or a connection the API never answered on. No secret shown."""
    import aiohttp

    shown = public_url(project.url.rstrip("/"))
    if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
        # Connected (a connect timeout is the other class): the server is there, not answering.
        waited = timeout.sock_read if isinstance(exc, aiohttp.SocketTimeoutError) else None
        waited = waited or timeout.total or timeout.sock_read or 0.0
        return ApiUnreachable(
            f"no answer from {shown} within {waited:g} s (the API accepted the connection)",
            hint=f"check that the server at {shown} is responsive (not stopped, overloaded"
            " or stuck), then run again",
        )
    if isinstance(exc, TimeoutError):
        what = f"no connection within {timeout.connect or 0.0:g} s"
    else:  # some of aiohttp's errors have no text: the class then says what happened
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ApiUnreachable(
        f"cannot reach {shown}: {redact_secrets(what, project)}",
        hint=f"check {URL_OPTION}: the project's API URL, e.g. https://<ref>.supabase.co,"
        " and that the server is running",
    )


async def sign_in(http: aiohttp.ClientSession, project: SupabaseProject) -> Session:
    """Sign the test user in (password grant) and pick one of their conversations.

    Raises as :func:`sign_in_error` reads Auth's answer (SignInRefused, exit 2: a wrong
    URL, key, email or password; BackendUnavailable, exit 3: rate-limited, a server
    error); ApiUnreachable when the API cannot be reached, or takes the connection and
    does not answer within the session's answer wait (else its total; the message says
    which); BackendUnavailable when the user's conversations cannot be read or there are
    none. No message holds a secret.
    """
    import aiohttp

    base = project.url.rstrip("/")
    headers = {"apikey": project.anon_key}
    timeout = _sign_in_timeout(http.timeout)
    try:
        url = f"{base}{TOKEN_PATH}?grant_type=password"
        credentials = {"email": project.email, "password": project.password}
        async with http.post(url, json=credentials, headers=headers, timeout=timeout) as resp:
            status, body = await answer(resp)
            kind = resp.headers.get("Content-Type", "")
        secrets = (project.anon_key, project.password)
        refused = sign_in_error(status, body, base=base, email=project.email,
                                flags=CHECK_FLAGS, secrets=secrets, content_type=kind)  # fmt: skip
        if refused is not None:
            raise refused
        token, user_id = str(body["access_token"]), str((body.get("user") or {}).get("id"))
        headers["Authorization"] = f"Bearer {token}"
        url = f"{base}/rest/v1/conversations?select=id&limit=1"
        async with http.get(url, headers=headers, timeout=timeout) as resp:
            status, rows = await answer(resp)
            if status != 200 or not isinstance(rows, list):
                said = _not_api("GET", url, status, resp) if rows is None else f"{status}: {rows}"
                raise BackendUnavailable(
                    redact_secrets(f"reading the test user's conversations failed: {said}",
                                   project, token),
                    hint="the reference schema's tables and policies must be on the project",
                )  # fmt: skip
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: a bad URL
        raise _unreachable(exc, project, timeout) from None
    if not rows:
        raise BackendUnavailable(
            f"{project.email} is in no conversation",
            hint="seed data with `devicelab backend datagen`",
        )
    return Session(access_token=token, user_id=user_id, conversation_id=str(rows[0]["id"]))
