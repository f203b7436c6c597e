"""HTTP load against an API that goes away, answers wrongly, or is named wrongly.

A small stand-in API on loopback (sign-in, conversation_list, messages, search) that can
be stopped mid-window or told to fail one operation: no database needed, a few seconds a
run. The exit codes are docs/load.md's: 3 when the API went away, 2 for a URL that is not
the base URL, 1 for a step that failed its criteria.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from aiohttp import web

from devicelab.errors import BackendUnavailable, BadInput

pytestmark = pytest.mark.timeout(60)

_KEY = "stand-in-anon-key-5d1e"  # must never be printed
_CLI = [sys.executable, "-m", "devicelab", "backend", "load"]
_USER = "00000000-0000-0000-0000-000000000001"


class _StandInApi:
    """An API that answers like Supabase: sign-in, the user's conversations, the read
    mix. ``stop_after`` REST requests it stops listening (a server that went away);
    ``auth_status`` makes every sign-in answer that status; ``fail_search`` answers
    search with a 500."""

    def __init__(
        self, *, stop_after: int = 0, auth_status: int = 200, fail_search: bool = False
    ) -> None:
        self.stop_after, self.auth_status, self.fail_search = stop_after, auth_status, fail_search
        self.served = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _token(self, request: web.Request) -> web.Response:
        if self.auth_status >= 400:
            body = {"code": "PGRST000", "message": "database connection failed"}
            return web.json_response(body, status=self.auth_status)
        return web.json_response({"access_token": "t", "user": {"id": _USER}})

    async def _rest(self, request: web.Request) -> web.Response:
        self.served += 1
        if self.stop_after and self.served == self.stop_after and self._runner is not None:
            # Stopped from a task of its own: cleanup waits for this handler to finish.
            asyncio.get_running_loop().create_task(self._runner.cleanup())
        name = request.match_info["name"]
        if name == "conversations":
            return web.json_response([{"id": "c1"}])
        if name == "rpc/search_messages" and self.fail_search:
            return web.json_response({"code": "XX000", "message": "boom"}, status=500)
        return web.json_response([{"id": 1}])

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/auth/v1/token", self._token)
        app.router.add_route("*", "/rest/v1/{name:.*}", self._rest)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> _StandInApi:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _load(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_CLI, "--url", url, "--anon-key", _KEY, "--mix", "read", "--accounts", "2",
         "--users", "4", "--per-user-rate", "5", *args],
        capture_output=True, text=True, timeout=50, check=False,
        env={**os.environ, "DEVICELAB_TEST_PASSWORD": "pw"},
    )  # fmt: skip


def test_an_api_that_goes_away_mid_step_is_exit_3_with_what_was_measured(
    tmp_path: Path,
) -> None:
    """Refused connections from every user for the rest of the window: the API went away
    (exit 3, one error line), not a step that failed (exit 1); --out holds the step,
    unfinished."""
    with _StandInApi(stop_after=12) as api:
        done = _load(api.url, "--duration", "3s", "--out", str(tmp_path))
    assert done.returncode == 3, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "went away" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["run"]["finished_at"] is None
    (step,) = [c for c in results["checks"] if c["id"] == "load_4"]
    assert step["evidence"]["total"]["count"] > 0
    assert (tmp_path / "report.md").is_file()
    assert _KEY not in done.stdout + done.stderr + json.dumps(results)


def test_the_table_says_timed_and_failed_apart_and_the_error_rate_in_percent() -> None:
    with _StandInApi(fail_search=True) as api:
        done = _load(api.url, "--duration", "2s")
    assert done.returncode == 1, done.stdout + done.stderr
    search = next(line for line in done.stdout.splitlines() if "search_messages" in line)
    ok, failed = search.split("n=")[1].split(" failed")[0].split(" ok, ")
    assert int(ok) == 0 and int(failed) > 0, search
    assert "errors=" not in search
    assert "error rate " in done.stdout and " % (needs < 1 %)" in done.stdout, done.stdout


@pytest.mark.parametrize(
    "url",
    ["http://::1:40263", "http://127.0.0.1:5/rest/v1", "http://127.0.0.1:5/auth/v1/", "ftp://x"],
)
def test_a_malformed_or_endpoint_url_is_bad_input_up_front(url: str, tmp_path: Path) -> None:
    from backend_checks.load.api import check_url

    with pytest.raises(BadInput):
        check_url(url)
    done = _load(url, "--duration", "1s", "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was made


def test_bracketed_ipv6_url_is_accepted() -> None:
    from backend_checks.load.api import check_url

    assert check_url("http://[::1]:40263/") == "http://[::1]:40263"


def test_a_broken_api_is_not_a_password_problem() -> None:
    """A 5xx sign-in is the server's trouble (exit 3), a 404 a wrong URL (exit 2 with the
    base-URL hint); only bad credentials send the user to datagen."""
    from backend_checks.load.api import RestApi, preflight

    with _StandInApi(auth_status=500) as api, pytest.raises(BackendUnavailable) as down:
        preflight(RestApi(url=api.url, anon_key=_KEY), "testuser1@example.com")
    assert "HTTP 500" in down.value.message and "datagen" not in down.value.one_line()
    with _StandInApi(auth_status=404) as api, pytest.raises(BadInput) as wrong:
        preflight(RestApi(url=api.url + "/x", anon_key=_KEY), "testuser1@example.com")
    assert "base URL" in wrong.value.hint and "datagen" not in wrong.value.one_line()
