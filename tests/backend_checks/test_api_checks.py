"""backend check's API side: options, the preflight before any connection, the skip path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backend_checks.api_checks import API_CHECKS, ApiOptions, api_options, run_api_checks
from backend_checks.realtime_checks import RealtimeLoad, SupabaseProject
from devicelab.errors import BadInput, UnsafeActionRefused


def test_a_project_needs_all_four_settings() -> None:
    assert api_options(None, None, None, None, None, 100).project is None
    with pytest.raises(BadInput, match="needs --anon-key, --test-password too"):
        api_options("http://127.0.0.1:9", None, "a@b.c", None, None, 100)
    with pytest.raises(BadInput, match="unknown plan 'gold'"):
        api_options(None, None, None, None, "gold", 100)
    full = api_options("http://127.0.0.1:9", "k", "a@b.c", "pw", "free", 150)
    assert full.project is not None and full.plan_limits() is not None
    assert full.realtime.subscribers == 150
    assert "pw" not in repr(full) and "'k'" not in repr(full)


def test_bare_postgres_skips_the_api_checks_with_a_reason() -> None:
    checks = run_api_checks(None, ApiOptions())
    assert [c.id for c in checks] == [cid for cid, _, _ in API_CHECKS]
    assert all(c.status == "skip" and "--supabase-url" in c.reason for c in checks)


def test_a_plan_that_forbids_the_load_is_refused_before_connecting() -> None:
    # Port 9 (discard) has no server: reaching it would raise BackendUnavailable instead.
    project = SupabaseProject(url="http://127.0.0.1:9", anon_key="k", email="a@b.c", password="p")
    options = ApiOptions(project=project, plan="free", realtime=RealtimeLoad(subscribers=500))
    with pytest.raises(UnsafeActionRefused, match="exceed the free plan's 200"):
        run_api_checks(None, options)
    busy = ApiOptions(project=project, plan="free", realtime=RealtimeLoad(subscribers=50))
    with pytest.raises(UnsafeActionRefused, match="messages/s exceed"):
        run_api_checks(None, busy)


def test_cli_refuses_half_a_project_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devicelab", "backend", "check", "--dsn", "host=127.0.0.1",
         "--supabase-url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "needs --anon-key" in done.stderr
