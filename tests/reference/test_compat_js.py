"""supabase-js (the real npm client, run by node) against the reference server."""

from __future__ import annotations

from conftest import conversation_id, run_script

from backend_checks.reference.server import ReferenceServer


def test_supabase_js_messaging_flows(server: ReferenceServer) -> None:
    verdict = run_script(
        "compat.mjs",
        server,
        CONV_MINE=conversation_id("12"),
        CONV_OTHER=conversation_id("34"),
    )
    assert verdict["ok"], verdict
