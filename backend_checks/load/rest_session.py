"""A user's HTTP session: signed in as a generated user, requests as supabase-js sends them.

Imported only inside a load process. The client is geventhttpclient's ``HTTPClient``
(one keep-alive connection per user), not Locust's ``FastHttpSession`` or ``HttpUser``:
measured on this machine against one aiohttp server, 20 greenlets back to back, it costs
~50 us of CPU per request, FastHttpSession ~150 us (it also fires Locust's events and
wraps responses), requests (HttpUser) ~500 us. The load process must not be the
bottleneck, so the cheapest one.

Lifecycle::

    connect()  POST /auth/v1/token?grant_type=password {email, password} -> access token;
               when the identity came without conversations (a remote API, no DSN):
               GET /rest/v1/conversations?select=id&participants=cs.{<uid>} (RLS-scoped)
    run()      the operation's RestCall with ``apikey`` and ``Authorization: Bearer <JWT>``
    close()    close the connection

Users of one load process that share an account share its sign-in (one token per email
and process): Supabase Auth limits password sign-ins per IP, so a 1000-user step signs
in once per account, not 1000 times. The key and the password come from the process's
environment and never appear in a message, a log or a result.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any
from urllib.parse import quote

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL

from backend_checks.load.mix import Operation
from backend_checks.load.models import ANON_KEY_ENV, PASSWORD_ENV, Identity, WorkerSpec
from backend_checks.load.session import SessionError, is_exhaustion

__all__ = ["CLIENT_INFO", "DEFAULT_PASSWORD", "RestSession", "classify_http"]

#: What supabase-js sends as X-Client-Info (the server may log it, never checks it).
CLIENT_INFO = "supabase-js-devicelab-load/2"
#: The generated users' password (backend_checks.datagen, the story's generator).
DEFAULT_PASSWORD = "password123"

#: email -> (access token, user id, conversations), shared by the users of this process.
_SIGNED_IN: dict[str, tuple[str, str, list[str]]] = {}


def classify_http(status: int, text: str) -> str:
    """The error kind of an HTTP answer ``status`` with body ``text``.

    5xx answers that say the pool or the server had no connection left are exhaustion
    (PostgREST's PGRST003 504, a pooler's "max client connections", our reference
    server's 503 "no database connection available"); 429 is "rate_limited"; 504 and
    other 5xx without such text are "timeout" and "unavailable"; 401/403 "auth".
    """
    if status >= 500 and is_exhaustion(text):
        return "exhaustion"
    if status == 429:
        return "rate_limited"
    if status == 504:
        return "timeout"
    if status in (502, 503):
        return "unavailable"
    if status in (401, 403):
        return "auth"
    return f"http:{status}"


def _message(status: int, body: bytes) -> str:
    """``HTTP <status>: <message>`` from a PostgREST or GoTrue error body."""
    text = body[:2000].decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("code", "error_code", "message", "msg") if data.get(k)]
        text = " ".join(parts) or text
    return f"HTTP {status}: {text.strip()[:200]}"


def _fill(template: str, params: dict[str, str], *, url: bool) -> str:
    for kind, value in params.items():
        template = template.replace("{" + kind + "}", quote(value, safe="") if url else value)
    return template


class RestSession:
    """One HTTP connection to the API at ``spec.api_url``, signed in as ``identity``."""

    def __init__(self, spec: WorkerSpec, identity: Identity) -> None:
        self.spec = spec
        self.identity = identity
        self.conversations = list(identity.conversations)
        self._key = os.environ.get(ANON_KEY_ENV, "")
        self._password = os.environ.get(PASSWORD_ENV) or DEFAULT_PASSWORD
        url = URL(spec.api_url)
        self._base = url.path.rstrip("/")
        self._timeout = spec.statement_timeout_ms / 1000
        self.client = HTTPClient.from_url(
            url,
            concurrency=1,
            connection_timeout=spec.connect_timeout_s,
            network_timeout=self._timeout,
        )
        self._token: str | None = None
        self._down = False
        # A sign-in refused for its credentials is not tried again (each try costs the
        # server a bcrypt, and an app would not retry a wrong password every second).
        self._refused: SessionError | None = None

    @property
    def connected(self) -> bool:
        """True once signed in, until the server refused or dropped us."""
        return self._token is not None and not self._down

    def _request(self, method: str, path: str, body: Any, token: str | None) -> tuple[int, bytes]:
        headers = {
            "apikey": self._key,
            "Authorization": f"Bearer {token or self._key}",
            "X-Client-Info": CLIENT_INFO,
        }
        payload = b""
        if method == "GET":
            headers["Accept-Profile"] = "public"
        else:
            headers["Content-Type"] = "application/json"
            headers["Content-Profile"] = "public"
            payload = json.dumps(body).encode()
        try:
            with gevent.Timeout(self._timeout + 5, TimeoutError):
                response = self.client.request(method, self._base + path, payload, headers)
                try:
                    data = response.read()
                finally:
                    response.release()
        except TimeoutError as exc:
            raise SessionError("timeout", f"no answer in {self._timeout:g} s") from exc
        except OSError as exc:
            self._down = True
            reason = exc.strerror or type(exc).__name__
            raise SessionError("connection", reason, lost=True) from None
        return response.status_code, data

    def connect(self) -> None:
        """Sign in (once per account and process); find the user's conversations when
        the identity has none. Raises SessionError."""
        self._down = False
        if self._refused is not None:
            raise self._refused
        email = self.identity.email
        cached = _SIGNED_IN.get(email)
        if cached is None:
            status, data = self._request(
                "POST",
                "/auth/v1/token?grant_type=password",
                {"email": email, "password": self._password},
                None,
            )
            if status >= 400:
                # Not supabase_auth.sign_in_error: that is the one error a command ends with,
                # and the preflight already read the first sign-in with it; in a load
                # process a failed sign-in is a request counted by its kind (auth,
                # rate_limited, unavailable), and only refused credentials stop the retries.
                refused = status in (400, 401, 403, 422)
                kind = "auth" if refused else classify_http(status, data.decode("utf-8", "replace"))
                error = SessionError(kind, "sign-in " + _message(status, data))
                if refused:
                    self._refused = error
                raise error
            session = json.loads(data)
            token, user_id = str(session["access_token"]), str(session["user"]["id"])
            conversations = list(self.identity.conversations) or self._conversations(token, user_id)
            cached = _SIGNED_IN[email] = (token, user_id, conversations)
        self._token = cached[0]
        self.conversations = list(cached[2])

    def _conversations(self, token: str, user_id: str) -> list[str]:
        status, data = self._request(
            "GET",
            f"/rest/v1/conversations?select=id&participants=cs.%7B{user_id}%7D"
            "&order=last_message_at.desc.nullslast&limit=20",
            None,
            token,
        )
        if status >= 400:
            raise SessionError(classify_http(status, data.decode("utf-8", "replace")),
                               "conversations " + _message(status, data))  # fmt: skip
        return [str(row["id"]) for row in json.loads(data)]

    def run(self, op: Operation, params: dict[str, str]) -> None:
        """Send ``op``'s request and read the whole answer. Raises SessionError."""
        call = op.rest
        path = call.path + ("?" + _fill(call.query, params, url=True) if call.query else "")
        body = {
            name: _fill(value, params, url=False) if isinstance(value, str) else value
            for name, value in call.body.items()
        }
        status, data = self._request(call.method, path, body, self._token)
        if status >= 400:
            lost = status == 401  # an expired or refused token: sign in again
            if lost:
                self._token = None
                _SIGNED_IN.pop(self.identity.email, None)
            kind = classify_http(status, data.decode("utf-8", "replace"))
            raise SessionError(kind, _message(status, data), lost=lost)

    def warm(self, requests: list[tuple[Operation, dict[str, str]]]) -> None:
        """Nothing to warm: the API's own pool holds warm database sessions, and the
        sign-in opened this user's keep-alive connection."""

    def close(self) -> None:
        """Close the connection (never raises)."""
        with contextlib.suppress(OSError):
            self.client.close()
