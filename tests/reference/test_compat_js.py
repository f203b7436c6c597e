"""supabase-js (the real npm client, run by node) against the reference server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import conversation_id

from backend_checks.reference.server import ReferenceServer

JS_DIR = Path(__file__).parent / "js"


def run_script(script: str, server: ReferenceServer, **env: str) -> dict[str, object]:
    """Run ``js/<script>`` with node against ``server``; returns its JSON verdict line."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (JS_DIR / "node_modules" / "@supabase" / "supabase-js").is_dir():
        pytest.skip("supabase-js is not installed (npm install in tests/reference/js)")
    proc = subprocess.run(
        [node, script],
        cwd=JS_DIR,
        env={**os.environ, "SUPABASE_URL": server.url, "SUPABASE_ANON_KEY": server.anon_key,
             **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no verdict from {script}: rc={proc.returncode} stderr={proc.stderr[-2000:]}"
    verdict: dict[str, object] = json.loads(lines[-1])
    return verdict


def test_supabase_js_messaging_flows(server: ReferenceServer) -> None:
    verdict = run_script(
        "compat.mjs",
        server,
        CONV_MINE=conversation_id("12"),
        CONV_OTHER=conversation_id("34"),
    )
    assert verdict["ok"], verdict
