"""HTTP load: the same users and mix, sent to a Supabase API as supabase-js sends them.

Each simulated user signs in as a generated user (``testuser<i>@example.com``, the story's
password) with ``POST /auth/v1/token?grant_type=password``, then sends the operations of
the mix to ``/rest/v1`` (``conversation_list``, ``messages``, ``rpc/send_message``,
``rpc/mark_as_read``, ``rpc/search_messages``) with ``apikey`` and ``Authorization:
Bearer <its JWT>``; PostgREST runs each as the user, so RLS applies. Measurement is the
local runner's (``runner.run_target``): intended-start HDR histograms, fixed rate or
closed loop, exhaustion classified from the answers (``rest_session.classify_http``).

Three ways to point it:

- :func:`run_rest_load` with a :class:`RestApi` (a Supabase project): identities are the
  first ``accounts`` generated users, who find their conversations after signing in;
  with a ``dsn`` too (the project's database), identities come from it and the
  pg_stat_statements / pg_stat_user_tables deltas are taken;
- :func:`run_reference_load`: our reference server over the managed cluster (seeded when
  empty), started for the run; the database CPU is the postmaster's (psutil), the
  server's own CPU is reported beside it.

The API key and the password go to the load processes in their environment, never into
a spec file, a message or a result.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

from backend_checks.base_url import check_base_url
from backend_checks.db import redact
from backend_checks.load.models import ANON_KEY_ENV, PASSWORD_ENV
from backend_checks.load.runner import LoadOptions, LoadProgress, LoadRun, LoadTarget, run_target
from backend_checks.supabase_auth import TOKEN_PATH, SignInFlags, error_text, sign_in_error
from devicelab.errors import BackendUnavailable, BadInput

__all__ = [
    "DEFAULT_PASSWORD",
    "RestApi",
    "check_url",
    "preflight",
    "run_reference_load",
    "run_rest_load",
    "write_rest_spec",
]

#: The generated users' password (backend_checks.datagen; the story's generator).
DEFAULT_PASSWORD = "password123"
_PREFLIGHT_TIMEOUT_S = 10.0


class RestApi(BaseModel):
    """A Supabase API to load: its URL, anon key and the generated users' password."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="API base URL, e.g. https://abc.supabase.co")
    anon_key: str = Field(repr=False)
    password: str = Field(DEFAULT_PASSWORD, repr=False)
    accounts: int | None = Field(
        None, ge=1, description="generated users to sign in (default: one per user, <= 100)"
    )

    def base(self) -> str:
        """The URL without a trailing slash. Raises BadInput when it is not an http(s)
        URL with a host and a numeric port (``http://::1:80`` needs brackets), or when it
        names the REST or Auth endpoint instead of the project's base URL."""
        return check_url(self.url)


def check_url(url: str) -> str:
    """``url`` without a trailing slash, once it is usable as an API base URL.

    Raises BadInput (exit 2, before any user starts): see
    :func:`backend_checks.base_url.check_base_url`, the validator ``backend check`` shares.
    """
    return check_base_url(url, "--url")


def _call(
    url: str, key: str, *, token: str | None = None, body: dict[str, Any] | None = None
) -> tuple[int, Any, str]:
    """The status, the JSON answer (None when not JSON) and the content type of one
    request. Raises BackendUnavailable when the API cannot be reached."""
    headers = {"apikey": key, "Authorization": f"Bearer {token or key}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        try:
            with urllib.request.urlopen(request, timeout=_PREFLIGHT_TIMEOUT_S) as response:
                status, raw = response.status, response.read()
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
            kind = exc.headers.get("Content-Type", "")
    except (OSError, ValueError) as exc:  # refused, reset, timed out; an unreadable URL
        reason = getattr(exc, "reason", None) or exc
        base = url.split("/auth/v1", 1)[0].split("/rest/v1", 1)[0]
        raise BackendUnavailable(
            f"cannot reach the API at {redact(base)}: {reason}",
            hint=f"check {_FLAGS.url}, and that the server is running",
        ) from None
    try:
        return status, json.loads(raw or b"null"), kind
    except ValueError:
        return status, None, kind


#: The options ``backend load`` takes the sign-in's inputs from, for the hints.
_FLAGS = SignInFlags(url="--url", key="--anon-key", credentials="--test-password")


def preflight(api: RestApi, email: str) -> None:
    """Sign ``email`` in and read ``conversation_list`` once, before any load process
    starts, so a wrong URL, key, password or schema is one line, not 1000 errors.

    Raises BackendUnavailable (exit 3: unreachable, rate-limited, or an API that answers
    5xx: broken, or its database down) or BadInput (exit 2: a URL that is not the base
    URL (404), the key refused, the user cannot sign in, no messaging schema): the
    sign-in's answer is read as ``backend check`` reads it
    (:func:`backend_checks.supabase_auth.sign_in_error`). No message holds a secret.
    """
    base = api.base()
    shown = redact(base)
    status, answer, kind = _call(
        f"{base}{TOKEN_PATH}?grant_type=password",
        api.anon_key,
        body={"email": email, "password": api.password},
    )
    # An API's error may echo the request (key, password, token) back: one line, no secret.
    refused = sign_in_error(status, answer, base=base, email=email, flags=_FLAGS,
                            secrets=(api.anon_key, api.password), content_type=kind)  # fmt: skip
    if refused is not None:
        raise refused
    token = str(answer["access_token"])
    status, listed, _ = _call(
        f"{base}/rest/v1/conversation_list?select=*&limit=1", api.anon_key, token=token
    )
    said = f"HTTP {status} {error_text(listed, api.anon_key, api.password, token)}"
    if status >= 500:
        raise BackendUnavailable(
            f"the API at {shown} cannot read conversation_list: {said}",
            hint="the server answers but is broken, or its database is down: check the"
            " server and its database, then run again",
        )
    if status >= 400:
        raise BadInput(
            f"the API does not serve the messaging schema: {said}",
            hint="install it: devicelab backend datagen --allow-writes on the project's database",
        )


def run_rest_load(
    api: RestApi,
    options: LoadOptions,
    *,
    dsn: str | None = None,
    workdir: Path | None = None,
    progress: LoadProgress | None = None,
) -> LoadRun:
    """Load ``api`` over HTTP with the steps of ``options``; returns the LoadRun.

    With ``dsn`` (the API's database) the identities come from it and the statistics
    deltas are taken (and the CPU, when that server is local). Raises as
    :func:`preflight`, UnsafeActionRefused (a writing mix without ``allow_writes``),
    ProbeFailed (a load process failed), BackendUnavailable (the API went away during a
    step: ``progress`` holds what was measured).
    """
    from backend_checks.load.mix import mix_weights
    from backend_checks.load.runner import refuse_writes

    refuse_writes(options, mix_weights(options.mix))
    base = api.base()
    preflight(api, "testuser1@example.com" if dsn is None else _first_email(dsn))
    target = _target(api, base, dsn, label=redact(base))
    return run_target(target, options, workdir=workdir, progress=progress)


def _target(api: RestApi, base: str, dsn: str | None, *, label: str) -> LoadTarget:
    return LoadTarget(
        label=label,
        dsn=dsn or "",
        api_url=base,
        accounts=api.accounts or 0,
        env={ANON_KEY_ENV: api.anon_key, PASSWORD_ENV: api.password},
        no_dsn_note="HTTP load without --dsn: database CPU and pg_stat_statements deltas "
        "were not taken; read the provider's CPU metric for the window",
    )


def _first_email(dsn: str) -> str:
    from backend_checks.db import connect
    from backend_checks.load.runner import fetch_identities

    with connect(dsn, autocommit=True) as conn:
        identities = fetch_identities(conn, 1, emails=True)
    return identities[0].email


def run_reference_load(
    options: LoadOptions,
    *,
    dsn: str | None = None,
    workdir: Path | None = None,
    pool_max_size: int = 20,
    progress: LoadProgress | None = None,
) -> LoadRun:
    """Start our reference server over ``dsn`` (default: the managed cluster, schema
    installed and seeded when empty), load it over HTTP, stop it; returns the LoadRun.

    The managed cluster is devicelab's own scratch database: the full mix may write
    there; over a given ``dsn`` it needs ``options.allow_writes``. Raises
    BackendUnavailable / ToolMissing (no cluster, the server does not start), BadInput
    (no data), UnsafeActionRefused, ProbeFailed; BackendUnavailable also when the
    database went away during a step (``progress`` holds what was measured);
    EnvironmentProblem when this process may not open a socket for each user.
    """
    from backend_checks.load.mix import mix_weights
    from backend_checks.load.runner import refuse_writes
    from backend_checks.reference.serve import prepare_database
    from backend_checks.reference.server import ReferenceServer
    from devicelab.fdlimit import ensure_open_files

    # The server runs in this process: a socket for each simulated user's connection.
    users = max(options.users)
    ensure_open_files(
        users + 512, f"{users:,} users of the reference server", fewer="fewer --users"
    )
    if dsn is None:
        dsn = prepare_database(None, say=lambda _: None)
        options = options.model_copy(update={"allow_writes": True})
        where = "the managed cluster"
    else:
        from backend_checks.load.runner import scratch_writes

        where = redact(dsn, dsn)
        # As over SQL: a database holding only a `backend datagen` data set is a scratch one.
        options = scratch_writes(dsn, options)
    refuse_writes(options, mix_weights(options.mix))
    with ReferenceServer(dsn, pool_max_size=pool_max_size) as server:
        api = RestApi(url=server.url, anon_key=server.anon_key)
        preflight(api, _first_email(dsn))
        label = f"{server.url} (reference server over {where})"
        target = _target(api, api.base(), dsn, label=label)
        target.api_process = psutil.Process(os.getpid())
        return run_target(target, options, workdir=workdir, progress=progress)


def write_rest_spec(
    api: RestApi, options: LoadOptions, users: int, path: Path, *, dsn: str | None = None
) -> Path:
    """Write the WorkerSpec of a ``users`` step over HTTP for Locust's own master/worker
    mode (``DEVICELAB_LOAD_SPEC``). The key and the password are not in it: every Locust
    process reads them from SUPABASE_ANON_KEY and DEVICELAB_TEST_PASSWORD.

    Raises as :func:`run_rest_load` (the preflight runs first).
    """
    from backend_checks.load.mix import mix_weights
    from backend_checks.load.runner import (
        DEFAULT_ACCOUNTS,
        fetch_identities,
        generated_identities,
        refuse_writes,
        spec_file,
    )

    weights = mix_weights(options.mix)
    refuse_writes(options, weights)
    base = api.base()
    if dsn is None:
        preflight(api, "testuser1@example.com")
        identities = generated_identities(api.accounts or min(users, DEFAULT_ACCOUNTS))
    else:
        from backend_checks.db import connect

        with connect(dsn, autocommit=True) as conn:
            identities = fetch_identities(conn, users, emails=True)
        preflight(api, identities[0].email)
    return spec_file(path, options, users, weights, identities, api_url=base)
