"""One reading of a Supabase sign-in's answer for ``backend check --supabase-url`` and
``backend load --url`` (backend_checks.supabase_auth): the same answer of one stand-in
API on 127.0.0.1 ends both commands with the same exit code (2: the user fixes the URL,
key or credentials; 3: the server is down, broken or rate-limiting), one line, the hint
naming the command's own option, and no key or password even when the API echoes them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from backend_checks.supabase_auth import SignInFlags, SignInRefused, sign_in_error
from devicelab.errors import BackendUnavailable
from tests.backend_checks.served_app import served

pytestmark = pytest.mark.timeout(120)

KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJlLWFub24tc2lnbi1pbg"
PASSWORD = "SignInPw_7731"

#: What the stand-in's /auth/v1/token answers, by case (GoTrue's own bodies), and the
#: exit code both commands must give.
ANSWERS: dict[str, tuple[int, dict[str, Any], int]] = {
    "no_auth_endpoint": (404, {"message": "Not Found"}, 2),
    "bad_login": (
        400,
        {"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"},
        2,
    ),
    "server_error": (500, {"code": 500, "msg": "Database error querying schema"}, 3),
    "rate_limited": (
        429,
        {"code": 429, "error_code": "over_request_rate_limit", "msg": "Request rate limit"},
        3,
    ),
}


def _stand_in(case: str) -> web.Application:
    """An API whose sign-in answers ``case``, its message echoing the request's key and
    body (the worst an API may do); everything else is 404."""
    status, body, _ = ANSWERS[case]

    async def token(request: web.Request) -> web.Response:
        echoed = f" (got apikey={request.headers.get('apikey')} body={await request.text()})"
        said = {k: (v + echoed if k in ("msg", "message") else v) for k, v in body.items()}
        return web.json_response(said, status=status)

    async def missing(_: web.Request) -> web.Response:
        return web.json_response({"message": "Not Found"}, status=404)

    app = web.Application()
    if case != "no_auth_endpoint":
        app.router.add_post("/auth/v1/token", token)
    app.router.add_route("*", "/{tail:.*}", missing)
    return app


@pytest.fixture(params=list(ANSWERS))
def api(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(case, base URL) of the stand-in API answering that case."""
    with served(_stand_in(request.param)) as url:
        yield request.param, url


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicelab", "backend", *argv],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def test_check_and_load_end_a_sign_in_answer_with_the_same_exit_code(
    api: tuple[str, str],
) -> None:
    case, url = api
    check = _run("check", "--supabase-url", url, "--anon-key", KEY,
                 "--test-email", "testuser1@example.com", "--test-password", PASSWORD)  # fmt: skip
    load = _run("load", "--url", url, "--anon-key", KEY, "--test-password", PASSWORD,
                "--users", "1", "--duration", "1s", "--mix", "read")  # fmt: skip
    expected = ANSWERS[case][2]
    for done in (check, load):
        said = done.stdout + done.stderr
        assert done.returncode == expected, said
        assert done.stderr.count("\n") == 1 and "Traceback" not in said, said
        assert f"HTTP {ANSWERS[case][0]}" in done.stderr, said
        leaked = [s for s in (KEY, KEY[:20], PASSWORD) if s in said]
        assert not leaked, said
    if case == "no_auth_endpoint":
        assert "check --supabase-url:" in check.stderr and "check --url:" in load.stderr
    if case == "bad_login":
        assert "--test-email and --test-password" in check.stderr
        assert "check --test-password" in load.stderr and "--test-email" not in load.stderr
        assert "Invalid login credentials" in check.stderr and "***" in check.stderr


LOAD = SignInFlags(url="--url", key="--anon-key", credentials="--test-password")
BASE = "http://127.0.0.1:9/p"


@pytest.mark.parametrize(
    ("status", "body", "kind", "said"),
    [
        (200, {"access_token": "t", "user": {"id": "u"}}, None, ""),
        (404, None, SignInRefused, "no Auth endpoint"),
        (400, {"error": "invalid_grant", "error_description": "Invalid login credentials"},
         SignInRefused, "cannot sign in"),
        (422, {"msg": "email must be given"}, SignInRefused, "cannot sign in"),
        (401, {"message": "Invalid API key"}, SignInRefused, "refused the anon key"),
        (403, {"message": "forbidden"}, SignInRefused, "did not answer the sign-in as"),
        (200, {"token": "x"}, SignInRefused, "did not answer the sign-in as"),
        (200, None, SignInRefused, "answered 200 (text/html), not a Supabase API reply"),
        (502, None, BackendUnavailable, "answered 502 (text/html), not a Supabase API reply"),
        (503, {"msg": "no database"}, BackendUnavailable, "failed (503): no database"),
        (429, {"msg": "slow down"}, BackendUnavailable, "rate-limits sign-ins"),
    ],
)  # fmt: skip
def test_one_reading_of_the_sign_in_answer(
    status: int, body: Any, kind: type[Exception] | None, said: str
) -> None:
    error = sign_in_error(status, body, base=BASE, email="e@x.y", flags=LOAD,
                          secrets=(KEY, PASSWORD), content_type="text/html; q=1")  # fmt: skip
    if kind is None:
        assert error is None
        return
    assert type(error) is kind and error is not None
    assert said in error.message and "\n" not in error.one_line()
    assert (error.exit_code == 2) is (kind is SignInRefused)


def test_a_refused_sign_in_mid_run_keeps_the_measured_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A sign-in refused on the embedded default (no preflight there) is exit 2's kind of
    # error now: the realtime checks measured before it must stay, as for exit 3's.
    from backend_checks import api_checks, realtime_checks, storage_checks
    from devicelab.models import Check

    measured = [Check(id="subscription_setup", title="t", category="realtime", status="pass")]

    def refused(*_: object, **__: object) -> list[Check]:
        raise SignInRefused("e@x.y cannot sign in", hint="check --test-password")

    monkeypatch.setattr(realtime_checks, "realtime_checks", lambda *_, **__: measured)
    monkeypatch.setattr(storage_checks, "storage_checks", refused)
    project = api_checks.SupabaseProject(url=BASE, anon_key="k", email="e@x.y", password="p")
    checks = api_checks._run(project, api_checks.ApiOptions(project=project), None)
    assert checks[0].status == "pass"
    assert {c.status for c in checks[1:]} == {"error"}
    assert "cannot sign in" in (checks[-1].reason or "")
