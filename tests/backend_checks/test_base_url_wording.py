"""What a refused API base URL's line says (an outside tester's findings): it names what
is wrong (a fragment is not a query), the service path it found, and the option by both
of its spellings, since ``backend check`` and ``backend load`` take either."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backend_checks.base_url import check_base_url
from devicelab.errors import BadInput

KEY = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJvbGUiOiJhbm9uIn0.c2ln"


def _refused(url: str, flag: str = "--url") -> BadInput:
    with pytest.raises(BadInput) as refused:
        check_base_url(url, flag)
    return refused.value


@pytest.mark.parametrize("url", ["https://abc.supabase.co#top", "https://abc.supabase.co/#"])
def test_a_fragment_is_called_a_fragment_not_a_query(url: str) -> None:
    line = _refused(url).one_line()
    assert "has no #fragment" in line and "query" not in line, line


@pytest.mark.parametrize("url", ["https://abc.supabase.co?", "https://abc.supabase.co?a=1#x"])
def test_a_query_is_still_called_a_query(url: str) -> None:
    assert "has no query" in _refused(url).one_line()


@pytest.mark.parametrize("service", ["/auth/v1", "/storage/v1", "/rest/v1"])
def test_the_hint_names_the_service_path_that_was_found(service: str) -> None:
    refused = _refused(f"https://abc.supabase.co{service}/")
    assert f"that is the {service} endpoint" in str(refused)
    assert refused.hint is not None and refused.hint.endswith(f"without {service}")


@pytest.mark.parametrize("flag", ["--url", "--supabase-url"])
def test_either_spelling_is_named_as_both(flag: str) -> None:
    assert "bad --url/--supabase-url 'ftp://h'" in str(_refused("ftp://h", flag))


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("check", ["--test-email", "t@example.com", "--test-password", "pw"]),
        ("load", ["--users", "1", "--duration", "1s", "--mix", "read"]),
    ],
)
@pytest.mark.parametrize("option", ["--url", "--supabase-url"])
def test_the_cli_line_names_the_option_by_both_spellings(
    command: str, extra: list[str], option: str
) -> None:
    # `backend load --supabase-url X` said "bad --url X": a spelling the user did not type.
    argv = [sys.executable, "-m", "devicelab", "backend", command, option,
            "http://127.0.0.1:9/auth/v1/", "--anon-key", KEY, *extra]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "bad --url/--supabase-url 'http://127.0.0.1:9/auth/v1/'" in done.stderr
    assert "that is the /auth/v1 endpoint" in done.stderr
    assert "without /auth/v1" in done.stderr and "/rest/v1" not in done.stderr, done.stderr
