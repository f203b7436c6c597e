"""``devicelab_lab`` as a user's suite meets it: the whole lab started once for the session
(a managed PostgreSQL of its own in a temporary DEVICELAB_STATE, the reference server, a
real mitmproxy shaping 4G, real Chromium loading the built test app), the checks in
--devicelab-out, the usage error for an unknown device and the skip without a browser.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devicelab.lab import app_build_dir
from devicelab.report import load_results

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]

SUITE = """
import pytest
from devicelab.errors import BadInput

def test_delivery_under_4g(devicelab_lab, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --devicelab-out stays where pytest started
    check = devicelab_lab.measure("message_delivery", delivery_count=3)
    assert check.status in ("pass", "fail"), check.reason
    assert check.target.column == "4g" and len(check.samples) == 3
    # A's send and B's websocket frame each cross half the 170 ms round trip.
    assert min(check.samples) >= 150, check.samples
    result = devicelab_lab.harness.run("message_search", {"terms": ["hello"], "count": 3})
    assert len(result.samples) == 3 and result.unit == "ms"

def test_the_same_lab_and_its_link(devicelab_lab, request):
    assert len(devicelab_lab.results().checks) == 1  # started once: the first test's check
    assert devicelab_lab.measure("battery_drain").status == "skip"
    typo = "unknown option 'delivery_cnt'; did you mean 'delivery_count'"
    with pytest.raises(BadInput, match=typo):
        devicelab_lab.measure("message_delivery", delivery_cnt=3)
    below = "option delivery_count: expected greater than or equal to 1, found 0$"
    with pytest.raises(BadInput, match=below):
        devicelab_lab.measure("message_delivery", delivery_count=0)
    assert devicelab_lab.proxy.status().offline is False
    assert request.node.get_closest_marker("device") is not None

def test_a_switched_link_is_said_in_the_check(devicelab_lab):
    from devicelab.config import network_profile

    devicelab_lab.proxy.set_profile(network_profile("fast-3g"))
    check = devicelab_lab.measure("message_delivery", delivery_count=1)
    assert check.evidence["link_profile"] == "fast-3g", check.evidence
    assert "measured with the link switched to fast-3g" in check.reason

def test_and_the_next_test_has_the_sessions_network(devicelab_lab):
    assert devicelab_lab.proxy.profile.id == "4g"
"""


@contextlib.contextmanager
def _state_dir() -> Iterator[Path]:
    """A DEVICELAB_STATE of its own; its cluster is stopped after."""
    # Not under pytest's tmp_path: as root, the postgres user must traverse every parent.
    state = Path(tempfile.mkdtemp(prefix="dl-plugin-lab-", dir="/tmp"))
    state.chmod(0o711)
    try:
        yield state
    finally:
        subprocess.run(
            [sys.executable, "-m", "devicelab", "backend", "stop"],
            env={**os.environ, "DEVICELAB_STATE": str(state)},
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        shutil.rmtree(state, ignore_errors=True)


def _wait_until_up(suite: subprocess.Popen[str], marker: Path) -> None:
    """Wait for the suite's test to write ``marker`` (its lab is up), at most 240 s."""
    import time

    deadline = time.monotonic() + 240
    while not marker.exists():
        assert suite.poll() is None, "the suite ended before its lab came up"
        assert time.monotonic() < deadline, "the lab never came up"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def state() -> Iterator[Path]:
    """A DEVICELAB_STATE shared by the module's tests (seeded by the first)."""
    with _state_dir() as path:
        yield path


@pytest.mark.slow
def test_a_users_suite_measures_on_the_lab_and_writes_results(
    pytester: pytest.Pytester, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (app_build_dir() / "index.html").is_file(), "run ./dev/setup: it builds the app"
    monkeypatch.setenv("DEVICELAB_STATE", str(state))
    pytester.makepyfile(test_delivery=SUITE)
    out = pytester.path / "lab-out"
    result = pytester.runpytest_subprocess(
        "--devicelab-network", "4g", "--devicelab-out", "lab-out", "-p", "no:cacheprovider",
        f"--devicelab-inventory={ROOT / 'inventory.yaml'}", timeout=240,
    )  # fmt: skip
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["*devicelab*", "* message_delivery *", f"*results: {out / 'results.json'}"]
    )

    results = load_results(out / "results.json")
    assert results.run.finished_at is not None  # the session ended: reports written
    assert results.run.device is not None and results.run.device.platform == "web"
    network = results.run.network
    assert network is not None and network.name == "4g"
    assert network.achieved is not None and network.achieved.rtt_ms is not None
    assert abs(network.achieved.rtt_ms - 170) < 40, network.achieved
    assert [c.id for c in results.checks] == [
        "message_delivery",
        "battery_drain",
        "message_delivery",
    ]
    for name in ("report.md", "report.html", "junit.xml"):
        assert (out / name).stat().st_size > 0


def test_an_unknown_device_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_lab="def test_lab(devicelab_lab):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--devicelab-device", "chrome", "-p", "no:cacheprovider",
        f"--devicelab-inventory={ROOT / 'inventory.yaml'}",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: devicelab: unknown device 'chrome'*(hint: *"])
    assert "Traceback" not in result.stderr.str()


def test_no_browser_skips_with_the_reason(pytester: pytest.Pytester) -> None:
    missing = pytester.path / "no-such" / "chromium"
    inventory = pytester.path / "inventory.yaml"
    inventory.write_text(
        f"devices:\n  web:\n    platform: web\n    model: Chromium\n    os: Debian 12\n"
        f"    browser: {missing}\n"
    )
    pytester.makepyfile(test_lab="def test_lab(devicelab_lab):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-rs", "-p", "no:cacheprovider", f"--devicelab-inventory={inventory}"
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*device web is not available (missing): {missing} not found*"])


@pytest.mark.slow
def test_sigterm_ends_the_session_like_ctrl_c_and_the_lab_is_torn_down(
    pytester: pytest.Pytester, state: Path
) -> None:
    """A cancelled CI job sends SIGTERM: pytest unwinds, the lab stops, reports are
    written, and nothing of it (Chromium, the proxy) is left running."""
    import signal
    import time

    import psutil

    marker = pytester.path / "lab-is-up"
    pytester.makepyfile(
        test_long=f"""
import pathlib, time
def test_long(devicelab_lab):
    pathlib.Path({str(marker)!r}).write_text("up")
    time.sleep(120)
"""
    )
    out = pytester.path / "lab-out"

    suite = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--devicelab-out", str(out),
         f"--devicelab-inventory={ROOT / 'inventory.yaml'}"],
        cwd=pytester.path, env={**os.environ, "DEVICELAB_STATE": str(state)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_until_up(suite, marker)
        # The suite's own Chromium (pgrep over the machine counted other runs' browsers).
        browsers = [
            p for p in psutil.Process(suite.pid).children(recursive=True)
            if "chrom" in p.name()
        ]  # fmt: skip
        assert browsers, "no Chromium under the suite"
        suite.send_signal(signal.SIGTERM)
        output, _ = suite.communicate(timeout=120)
    finally:
        if suite.poll() is None:
            suite.kill()
    assert suite.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    # Stopped, not finished: the report must not read "all checks passed".
    assert load_results(out / "results.json").run.finished_at is None
    assert "unfinished" in (out / "report.md").read_text()
    time.sleep(1)  # Chromium's helpers go a moment after the browser
    assert [p for p in browsers if p.is_running()] == [], "Chromium left running"


XDIST_SUITE = """
import pytest

@pytest.mark.parametrize("i", [1, 2])
def test_delivery(devicelab_lab, i):
    check = devicelab_lab.measure("message_delivery", delivery_count=2)
    assert check.status in ("pass", "fail"), check.reason
"""


@pytest.mark.slow
def test_xdist_workers_each_run_a_lab_with_results_of_their_own(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers, one empty embedded database: both seeded it at once (the second
    replaced the tables under the first: its Realtime filter refused, an error) and both
    wrote the same results.json (one worker's checks lost)."""
    pytester.makepyfile(test_two=XDIST_SUITE)
    with _state_dir() as fresh:
        monkeypatch.setenv("DEVICELAB_STATE", str(fresh))
        result = pytester.runpytest_subprocess(
            "-n", "2", "--dist", "load", "--devicelab-out", "lab-out", "-p", "no:cacheprovider",
            f"--devicelab-inventory={ROOT / 'inventory.yaml'}", timeout=300,
        )  # fmt: skip
    result.assert_outcomes(passed=2)
    out = pytester.path / "lab-out"
    for worker in ("gw0", "gw1"):
        results = load_results(out / worker / "results.json")
        assert [c.id for c in results.checks] == ["message_delivery"], worker
        assert results.run.finished_at is not None
        result.stdout.fnmatch_lines([f"{worker}:", f"*results: {out / worker / 'results.json'}"])
    assert not (out / "results.json").exists()


@pytest.mark.slow
def test_a_sigterm_to_the_xdist_controller_alone_ends_the_workers_lab(
    pytester: pytest.Pytester, state: Path
) -> None:
    """A job runner that signals only the process it started (the controller): xdist ends
    the orphaned worker, which tears its lab down as on Ctrl-C (results finished), not
    left running Chromium and the proxy until its test ends on its own (here 300 s)."""
    import signal
    import time

    marker = pytester.path / "lab-is-up"
    pytester.makepyfile(
        test_long=f"""
import pathlib, time
def test_long(devicelab_lab):
    pathlib.Path({str(marker)!r}).write_text("up")
    time.sleep(300)
"""
    )
    out = pytester.path / "lab-out"
    suite = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-n", "1", "-p", "no:cacheprovider",
         "--devicelab-out", str(out), f"--devicelab-inventory={ROOT / 'inventory.yaml'}"],
        cwd=pytester.path, env={**os.environ, "DEVICELAB_STATE": str(state)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    results = out / "gw0" / "results.json"
    try:
        _wait_until_up(suite, marker)
        suite.send_signal(signal.SIGTERM)  # the controller only, as a job runner may
        suite.wait(timeout=60)
        # xdist 3.8 ends the orphaned worker in ~6 s; its teardown writes the reports.
        deadline = time.monotonic() + 60
        while not (results.parent / "report.md").exists():
            assert time.monotonic() < deadline, "the worker's lab was not torn down"
            time.sleep(0.5)
        assert load_results(results).run.finished_at is None  # stopped, not finished
    finally:
        if suite.poll() is None:
            suite.kill()
        subprocess.run(["pkill", "-f", str(pytester.path)], check=False)
