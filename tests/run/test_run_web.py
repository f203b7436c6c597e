"""`devicelab run` on the web device, end to end, with real peers on loopback: a managed
PostgreSQL of its own (in a temporary DEVICELAB_STATE), the reference server, a real
mitmproxy shaping 4G, real Chromium loading the built test app (./dev/setup builds it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devicelab.config import load_networks
from devicelab.lab import app_build_dir
from devicelab.report import load_results
from devicelab.version import full_version


def devicelab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicelab", *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def state_env() -> Iterator[dict[str, str]]:
    """An environment with a DEVICELAB_STATE of its own; its cluster is stopped after."""
    # Not under pytest's tmp_path: as root, the postgres user must traverse every parent.
    state = Path(tempfile.mkdtemp(prefix="dl-run-web-", dir="/tmp"))
    state.chmod(0o711)
    # The leak run's workload for 12 s instead of the story's 5 minutes.
    env = {**os.environ, "DEVICELAB_STATE": str(state), "DEVICELAB_LEAK_DURATION_S": "12"}
    try:
        yield env
    finally:
        devicelab("backend", "stop", env=env)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slow
def test_run_on_web_through_4g_measures_in_the_browser(
    state_env: dict[str, str], tmp_path: Path
) -> None:
    assert (app_build_dir() / "index.html").is_file(), "run ./dev/setup: it builds the app"
    out = tmp_path / "out"
    done = devicelab(
        "run", "--device", "web", "--network", "4g", "--out", str(out),
        "--scenario", "message_delivery", "--scenario", "subscription_setup",
        "--scenario", "reconnect",
        "--scenario", "battery_drain", "--scenario", "memory_leak",
        env=state_env,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "Traceback" not in done.stderr

    results = load_results(out / "results.json")  # the contract's models = its schema
    assert results.run.kind == "device"
    assert results.run.devicelab_version == full_version()  # the commit that measured
    assert results.run.finished_at is not None
    assert results.run.device is not None and results.run.device.platform == "web"
    assert results.run.backend is not None and results.run.backend.kind == "reference"
    network = results.run.network
    profile = load_networks().profiles["4g"]
    assert network is not None and network.name == "4g" and network.achieved is not None
    assert network.achieved.rtt_ms is not None
    assert abs(network.achieved.rtt_ms - 170) < 40, network.achieved
    assert network.achieved.down_kbps and 7_000 < network.achieved.down_kbps < 11_000

    checks = {c.id: c for c in results.checks}
    assert list(checks) == [
        "message_delivery", "subscription_setup", "reconnect", "memory_leak", "battery_drain",
    ]  # fmt: skip
    delivery = checks["message_delivery"]
    assert delivery.status in ("pass", "fail"), delivery.reason
    assert delivery.evidence["lost"] == 0
    assert len(delivery.samples) == delivery.evidence["sent"] == 20
    # A's send crosses the uplink (RTT/2) and B's websocket frame the downlink (RTT/2):
    # below one RTT the websocket would not be shaped.
    assert profile.rtt_ms is not None
    assert min(delivery.samples) >= 0.9 * profile.rtt_ms, delivery.samples
    assert delivery.target is not None and delivery.target.column == "4g"
    assert delivery.target.value == 500

    setup = checks["subscription_setup"]
    assert setup.status in ("pass", "fail"), setup.reason
    assert setup.unit == "s" and setup.target is not None and setup.target.value == 1
    # Until "Subscribed to PostgreSQL", which comes after phx_reply; the socket is opened
    # each time (the upgrade and the join each cross the link: two RTTs at least).
    for sample, reply in zip(setup.samples, setup.evidence["phx_reply_ms"], strict=True):
        assert sample * 1000 >= reply
        assert sample * 1000 >= 2 * 0.9 * profile.rtt_ms
    assert not any(setup.evidence["socket_open_before"])

    reconnect = checks["reconnect"]
    assert reconnect.status in ("pass", "fail"), reconnect.reason
    assert reconnect.unit == "s" and reconnect.stat == "max"
    for cycle in reconnect.evidence["cycles"]:
        statuses = [s["status"] for s in cycle["channel_statuses"]]
        assert "CHANNEL_ERROR" in statuses, "the drop never reached the websocket"
        assert cycle["total_ms"] >= cycle["resubscribed_ms"] > 0
    assert checks["battery_drain"].status == "skip"
    assert "N/A on web" in checks["battery_drain"].reason
    leak = checks["memory_leak"]
    assert leak.status in ("pass", "fail"), leak.reason
    assert leak.unit == "MB_per_min" and leak.target is not None and leak.target.value == 1
    heap = {s.name: s for s in results.series}["memory.js_heap_mb"]
    assert len(heap.t) == len(heap.v) >= 3 and all(v > 0 for v in heap.v)

    assert "message_delivery" in done.stdout and "achieved RTT" in done.stdout
    for name in ("report.md", "report.html", "junit.xml"):
        assert (out / name).stat().st_size > 0
    # Each measured check says how long it took: junit's <testcase time> read 0.000.
    assert reconnect.evidence["duration_s"] >= 5  # it stays offline 5 s per cycle
    assert 'name="reconnect" time="0.000"' not in (out / "junit.xml").read_text()
    text = (out / "results.json").read_text()
    assert "eyJ" not in text, "a JWT leaked into results.json"
    assert "password123" not in text + done.stdout + done.stderr
    assert json.loads(text)["schema"] == "devicelab.results/1"


def test_unknown_scenario_and_device_exit_2_with_a_suggestion() -> None:
    done = devicelab("run", "--device", "web", "--network", "4g", "--scenario", "mesage_delivery")
    assert done.returncode == 2, done.stderr
    assert "did you mean 'message_delivery'" in done.stderr
    assert "Traceback" not in done.stderr
    done = devicelab("run", "--device", "chrome", "--network", "4g")
    assert done.returncode == 2
    assert "unknown device 'chrome'" in done.stderr


def test_only_skipped_checks_start_nothing(tmp_path: Path) -> None:
    done = devicelab(
        "run", "--device", "web", "--network", "4g", "--out", str(tmp_path),
        "--scenario", "local_cache_query_50", "--scenario", "background_disconnect",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = load_results(tmp_path / "results.json")
    reasons = {c.id: c.reason for c in results.checks}
    assert all(c.status == "skip" for c in results.checks)
    assert "Local Cache Query (50 msgs), Web (Desktop) N/A" in reasons["local_cache_query_50"]
    assert "phone" in reasons["background_disconnect"]
