"""The README's first command end to end: `devicelab backend check` on the embedded default.

A cluster of its own (in a temporary DEVICELAB_STATE) is created, seeded and checked;
the reference server serves the realtime and storage checks; everything is stopped after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

STORY_BACKEND_IDS = {
    "message_fetch", "conversation_list", "unread_count", "message_search", "send_message",
    "mark_as_read", "index_usage", "seq_scans", "unused_indexes", "buffer_hit_ratio",
    "realtime_broadcast", "subscription_setup", "storage_upload_5mb", "storage_download_5mb",
    "signed_url",
}  # fmt: skip


def devicelab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicelab", *args],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_backend_check_on_the_embedded_default(tmp_path: Path) -> None:
    # Not under tmp_path: as root, the postgres user must traverse every parent folder.
    state = Path(tempfile.mkdtemp(prefix="dl-main-job-", dir="/tmp"))
    state.chmod(0o711)
    env = {**os.environ, "DEVICELAB_STATE": str(state)}
    for name in ("SUPABASE_URL", "SUPABASE_ANON_KEY"):
        env.pop(name, None)
    out = tmp_path / "out"
    try:
        done = devicelab("backend", "check", "--out", str(out), "--runs", "5", env=env)
    finally:
        devicelab("backend", "stop", env=env)
        shutil.rmtree(state, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "devicelab.results/1"
    assert results["run"]["kind"] == "backend"
    # The SQL suite talked to a plain database: the managed cluster, by its unix socket.
    backend = results["run"]["backend"]
    assert backend["kind"] == "postgres", backend
    assert backend["url"].startswith(f"postgresql://postgres@/devicelab?host={state}/"), backend
    assert "(" not in backend["url"] and " " not in backend["url"]
    # The API checks talked to the reference server this run started: their evidence says so.
    by_id = {c["id"]: c for c in results["checks"]}
    api = by_id["realtime_broadcast"]["evidence"]["api"]
    assert api["kind"] == "reference" and api["url"].startswith("http://127.0.0.1:"), api
    assert api["database"] == backend["url"]
    statuses = {c["id"]: c["status"] for c in results["checks"]}
    assert set(statuses) >= STORY_BACKEND_IDS
    judged = {cid: s for cid, s in statuses.items() if cid in STORY_BACKEND_IDS}
    assert all(s in ("pass", "skip") for s in judged.values()), judged
    assert statuses["realtime_broadcast"] == "pass"
    load = {c["id"]: c for c in results["checks"] if c["id"] in ("load_100", "load_1000")}
    assert all(c["status"] == "skip" and "--load" in c["reason"] for c in load.values())
    assert len(load) == 2
    for name in ("report.md", "report.html", "junit.xml"):
        assert (out / name).stat().st_size > 0
    text = (out / "results.json").read_text()
    assert "eyJ" not in text, "a JWT leaked into results.json"
