"""A ``devicelab_lab`` session stopped as a terminal or a job runner stops it: Ctrl-C or
SIGTERM to the whole process group, SIGTERM to the xdist controller alone. Each ends with
exit 2, the lab torn down (no proxy left), no traceback, and a summary that says the
session was stopped. Real peers: the lab's own cluster, mitmproxy, Chromium."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devicelab.netshape.proxy import ShapedProxy
from devicelab.report import load_results
from tests.plugin.test_pytest_plugin_lab import ROOT, _state_dir, _wait_until_up

pytest_plugins = ["pytester"]

#: A delivery long enough to be interrupted in (200 messages at 4G: some 40 s).
LONG_SUITE = """
import pathlib

def test_measures_long(devicelab_lab):
    pathlib.Path({marker!r}).write_text("up")
    devicelab_lab.measure("message_delivery", delivery_count=200)

def test_and_again(devicelab_lab):
    devicelab_lab.measure("message_delivery", delivery_count=200)
"""

#: The summary's last line for a session stopped in its first check, before its path.
STOPPED_LINE = "unfinished (stopped before its end): 0 pass, 0 fail, 0 skip, 0 error; results: "


@pytest.fixture(scope="module")
def state() -> Iterator[Path]:
    """A DEVICELAB_STATE shared by the module's tests (seeded by the first)."""
    with _state_dir() as path:
        yield path


def _proxies_of(pid: int) -> list[psutil.Process]:
    """The shaped proxies (serve subprocesses) started by process ``pid``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "devicelab.netshape.serve" in cmdline and f"{pid}" in cmdline:
            found.append(process)
    return found


def _run_and_stop(
    pytester: pytest.Pytester, state: Path, args: list[str], stop: signal.Signals, group: bool
) -> tuple[int, str, int]:
    """Run LONG_SUITE in a session of its own (as a terminal's job), ``stop`` it a few
    seconds into its first measurement (to its process group, or to pytest alone);
    returns its exit code, its output and its pid."""
    marker = pytester.path / "lab-is-up"
    pytester.makepyfile(test_long=LONG_SUITE.format(marker=str(marker)))
    suite = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args,
         "--devicelab-network", "4g", "--devicelab-out", "lab-out",
         f"--devicelab-inventory={ROOT / 'inventory.yaml'}"],
        cwd=pytester.path, env={**os.environ, "DEVICELAB_STATE": str(state)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_until_up(suite, marker)
        time.sleep(3)  # into measure(): Chromium and the proxy busy with the deliveries
        if group:
            os.killpg(suite.pid, stop)
        else:
            suite.send_signal(stop)
        output, _ = suite.communicate(timeout=120)
    finally:
        if suite.poll() is None:
            os.killpg(suite.pid, signal.SIGKILL)
            suite.wait()
    return suite.returncode, output, suite.pid


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_to_the_process_group_ends_the_session_cleanly(
    pytester: pytest.Pytester, state: Path, stop: signal.Signals
) -> None:
    """Ctrl-C in a terminal (or a runner's SIGTERM to the group) reached the proxy
    subprocess too: it died first, and the autouse fixture's proxy.status() ended the
    session with a ~90-line traceback out of pytest_sessionfinish (exit 1, no summary)."""
    out = pytester.path / "lab-out"
    # An earlier xdist session's worker folders: the one only devicelab wrote goes.
    (out / "gw0").mkdir(parents=True)
    (out / "gw0" / "results.json").write_text("{}")
    (out / "gw0" / "report.md").write_text("old")
    (out / "gw1").mkdir()
    (out / "gw1" / "results.json").write_text("{}")
    (out / "gw1" / "notes.txt").write_text("someone's own")
    code, output, pid = _run_and_stop(pytester, state, [], stop, group=True)
    assert code == pytest.ExitCode.INTERRUPTED, output
    assert "Traceback" not in output and "EnvironmentProblem" not in output, output
    assert "Broken pipe" not in output, output
    assert "devicelab ====" in output, output
    assert f"{STOPPED_LINE}{out / 'results.json'}" in output, output
    assert load_results(out / "results.json").run.finished_at is None
    assert "unfinished" in (out / "report.md").read_text()
    assert not (out / "gw0").exists()
    assert (out / "gw1" / "notes.txt").exists()  # not provably devicelab's: kept
    assert _proxies_of(pid) == [], "the shaped proxy was left running"


@pytest.mark.slow
def test_a_sigterm_to_the_xdist_controller_ends_with_exit_2_and_the_summary(
    pytester: pytest.Pytester, state: Path
) -> None:
    """A job runner cancels the process it started: the xdist controller died of its
    SIGTERM (exit 143, no devicelab summary) and its workers, orphaned, printed
    "PluggyTeardownRaisedWarning ... OSError: cannot send (already closed?)"."""
    out = pytester.path / "lab-out"
    code, output, _ = _run_and_stop(pytester, state, ["-n", "1"], signal.SIGTERM, group=False)
    assert code == pytest.ExitCode.INTERRUPTED, output
    assert "PluggyTeardownRaisedWarning" not in output and "cannot send" not in output, output
    assert "Traceback" not in output, output
    assert "gw0:" in output, output
    assert f"{STOPPED_LINE}{out / 'gw0' / 'results.json'}" in output, output
    results = load_results(out / "gw0" / "results.json")
    assert results.run.finished_at is None  # torn down as on Ctrl-C, reports written
    assert "unfinished" in (out / "gw0" / "report.md").read_text()


def test_the_proxy_subprocess_is_out_of_the_terminals_process_group() -> None:
    """A terminal's Ctrl-C goes to its foreground process group: the proxy child must
    not be in it (its parent stops it); a parent killed outright is still noticed by the
    child's --parent-pid watch (tests/netshape/test_netshape_lifecycle.py)."""
    with ShapedProxy(None, mode="subprocess") as proxy:
        assert proxy._process is not None
        child = proxy._process.pid
        assert os.getpgid(child) != os.getpgid(0)
        assert proxy.status().offline is False
