"""One validator for a Supabase API's base URL (an outside tester's findings): ``backend
check --supabase-url`` and ``backend load --url`` refuse the same URLs with the same
words (exit 2, before any request), never show a password or a key's prefix; a URL that
answers 404 on /auth/v1/token is named with its status, not blamed on the credentials,
and is exit 2 for both (the URL is the user's to fix).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from aiohttp import web

from backend_checks.base_url import check_base_url, shown_url
from devicelab.errors import BadInput
from tests.backend_checks.served_app import served

KEY = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJvbGUiOiJhbm9uIn0.c2ln"
PASSWORD = "Pw0rdSecret"


def _check(url: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "devicelab", "backend", "check", "--supabase-url", url,
            "--anon-key", KEY, "--test-email", "t@example.com",
            "--test-password", "pw"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)


def _load(url: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "devicelab", "backend", "load", "--url", url,
            "--anon-key", KEY, "--users", "1", "--duration", "1s", "--mix", "read"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:9/rest/v1/", "that is the /rest/v1 endpoint"),
        (f"http://127.0.0.1:9?apikey={KEY}", "a base URL has no query"),
        (f"http://user:{PASSWORD}@127.0.0.1:9", "holds a user or password"),
        ("http://::1:9", "no host and port"),
    ],
)
def test_check_and_load_refuse_the_same_urls_alike(url: str, said: str) -> None:
    for done in (_check(url), _load(url)):
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert said in done.stderr
        assert PASSWORD not in done.stderr and "eyJ" not in done.stderr, done.stderr


def test_a_shown_url_is_masked_before_it_is_cut() -> None:
    shown = shown_url(f"https://abc.supabase.co/x?apikey={KEY}&b=2")
    assert "eyJ" not in shown and KEY[:8] not in shown
    assert shown == "https://abc.supabase.co/x?apikey=***&b=***"
    assert len(shown_url("https://h/" + "a" * 200)) == 80
    with pytest.raises(BadInput) as refused:
        check_base_url(f"https://abc.supabase.co/{'p' * 60}?apikey={KEY}", "--url")
    assert "eyJ" not in refused.value.one_line()


@pytest.fixture
def not_found() -> Iterator[str]:
    """The URL of an HTTP server on 127.0.0.1 that answers 404 to everything."""

    async def missing(_: web.Request) -> web.Response:
        return web.json_response({"message": "Not Found"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", missing)
    with served(app) as url:
        yield url


def test_a_url_without_auth_is_named_with_its_status(not_found: str) -> None:
    url = f"{not_found}/proj/abc"
    done = _check(url)
    assert done.returncode == 2, done.stderr  # the URL is the user's to fix, as for load
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert url in done.stderr and "HTTP 404" in done.stderr, done.stderr
    assert "password" not in done.stderr  # the credentials were never judged
    loaded = _load(url)
    assert loaded.returncode == 2, loaded.stderr
    assert url in loaded.stderr and "HTTP 404" in loaded.stderr, loaded.stderr
