"""Stand-ins for a lab without phones, for users' suites and ours.

- :func:`webview_capabilities`: the Appium capabilities of a desktop Chromium standing in
  for a phone's WebView (Appium's chromium driver with the system chromedriver: the same
  chromedriver protocol Appium uses for an Android WebView). Put them in an inventory
  entry's ``appium.capabilities`` and the run loads the app in that browser.
- :func:`standin_missing`: why that stand-in cannot run here ("" when it can): Appium in
  ``tools/appium`` (./dev/setup), chromium and chromedriver.
- :func:`standin_processes`: the process table of a fake iPhone (sysmontap's rows) whose
  app is that stand-in: its browser as the app, its renderers as WKWebView's WebContent
  processes, with their real memory and CPU.
- :func:`lab_state`: a DEVICELAB_STATE of its own for a suite (its managed cluster, its
  journal), which the postgres user can reach when we are root, stopped and removed after.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from devicelab.platforms.web import DEFAULT_BROWSER

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "lab_state",
    "standin_missing",
    "standin_processes",
    "webview_capabilities",
]

CHROMIUM = DEFAULT_BROWSER
CHROMEDRIVER = "/usr/bin/chromedriver"
_HEADLESS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage")


def webview_capabilities(*args: str) -> dict[str, Any]:
    """W3C capabilities of the Chromium stand-in for a WebView; ``args`` are more launch
    flags (e.g. ``--proxy-server=...``, the Wi-Fi proxy an iPhone would have).

    Each call gets a profile directory of its own (``--user-data-dir``, unless ``args``
    name one), removed when this process exits: the one chromedriver makes when none is
    given stays in /tmp after Appium ends the session (~4 MB a session). Sessions made
    from one call's capabilities share it, one after the other."""
    if not any(a.startswith("--user-data-dir=") for a in args):
        profile = tempfile.mkdtemp(prefix="profile-", dir=_profiles().name)
        args = (f"--user-data-dir={profile}", *args)
    return {
        "platformName": "linux",
        "browserName": "chrome",
        "appium:automationName": "Chromium",
        "appium:executable": CHROMEDRIVER,
        "goog:chromeOptions": {"binary": CHROMIUM, "args": [*_HEADLESS, *args]},
    }


@functools.cache
def _profiles() -> tempfile.TemporaryDirectory[str]:
    """The folder of this process's stand-in profiles (removed at exit)."""
    return tempfile.TemporaryDirectory(prefix="devicelab-webview-")


def standin_missing() -> str:
    """Why the WebView stand-in cannot run on this machine ("" when it can)."""
    from devicelab.platforms.appium_server import appium_home

    if not (appium_home() / "node_modules" / ".bin" / "appium").exists():
        return "Appium is not installed in tools/appium: run ./dev/setup"
    if not (Path(CHROMEDRIVER).exists() and Path(CHROMIUM).exists()):
        return "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
    return ""


def standin_processes(flag: str, app: str = "App") -> Callable[[], list[dict[str, Any]]]:
    """A fake iPhone's process table (``FakeIPhone.processes``) whose app is the Chromium
    stand-in launched with ``flag`` among its arguments.

    Each call returns SpringBoard, then, while such a browser runs, its main process as
    ``app`` and each of its renderers as ``com.apple.WebKit.WebContent`` with
    ``responsiblePID`` = the browser (as WKWebView's content processes are the app's),
    with real figures: USS (psutil) as ``physFootprint`` in bytes, CPU percent of one core
    since the previous call as ``cpuUsage``.
    """
    import psutil

    seen: dict[int, psutil.Process] = {}  # cpu_percent() measures since the previous call

    def usage(proc: psutil.Process) -> tuple[int, float]:
        if proc.pid not in seen:
            seen[proc.pid] = proc
        return proc.memory_full_info().uss, seen[proc.pid].cpu_percent(interval=None)

    def table() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [
            {"name": "SpringBoard", "pid": 34, "ppid": 1, "responsiblePID": 34,
             "physFootprint": 58_000_000, "cpuUsage": 0.4},
        ]  # fmt: skip
        for proc in psutil.process_iter(["cmdline"]):
            try:
                args = proc.info["cmdline"] or []
                if flag not in args or any(a.startswith("--type=") for a in args):
                    continue
                footprint, cpu = usage(proc)
                rows.append({"name": app, "pid": proc.pid, "ppid": 1, "responsiblePID": proc.pid,
                             "physFootprint": footprint, "cpuUsage": cpu})  # fmt: skip
                for child in proc.children(recursive=True):
                    if "--type=renderer" not in child.cmdline():
                        continue
                    footprint, cpu = usage(child)
                    rows.append({"name": "com.apple.WebKit.WebContent", "pid": child.pid,
                                 "ppid": 1, "responsiblePID": proc.pid,
                                 "physFootprint": footprint, "cpuUsage": cpu})  # fmt: skip
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return rows

    return table


@contextlib.contextmanager
def lab_state(prefix: str = "devicelab-lab-") -> Iterator[dict[str, str]]:
    """A temporary DEVICELAB_STATE (and HOME) in /tmp, mode 711 so that the postgres user
    can reach its cluster when we are root; yields the environment of a devicelab process
    using it. Its managed cluster is stopped and the folder removed after."""
    state = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    state.chmod(0o711)
    (state / "home").mkdir()
    env = {**os.environ, "DEVICELAB_STATE": str(state), "HOME": str(state / "home")}
    try:
        yield env
    finally:
        subprocess.run(
            [sys.executable, "-m", "devicelab", "backend", "stop"],
            env=env, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        shutil.rmtree(state, ignore_errors=True)
