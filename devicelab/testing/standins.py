"""Stand-ins for a lab without phones, for users' suites and ours.

- :func:`webview_capabilities`: the Appium capabilities of a desktop Chromium standing in
  for a phone's WebView (Appium's chromium driver with the system chromedriver: the same
  chromedriver protocol Appium uses for an Android WebView). Put them in an inventory
  entry's ``appium.capabilities`` and the run loads the app in that browser.
- :func:`standin_missing`: why that stand-in cannot run here ("" when it can): Appium in
  ``tools/appium`` (./dev/setup), chromium and chromedriver.
- :func:`lab_state`: a DEVICELAB_STATE of its own for a suite (its managed cluster, its
  journal), which the postgres user can reach when we are root, stopped and removed after.
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
from typing import Any

from devicelab.platforms.web import DEFAULT_BROWSER

__all__ = ["CHROMEDRIVER", "CHROMIUM", "lab_state", "standin_missing", "webview_capabilities"]

CHROMIUM = DEFAULT_BROWSER
CHROMEDRIVER = "/usr/bin/chromedriver"
_HEADLESS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage")


def webview_capabilities(*args: str) -> dict[str, Any]:
    """W3C capabilities of the Chromium stand-in for a WebView; ``args`` are more launch
    flags (e.g. ``--proxy-server=...``, the Wi-Fi proxy an iPhone would have)."""
    return {
        "platformName": "linux",
        "browserName": "chrome",
        "appium:automationName": "Chromium",
        "appium:executable": CHROMEDRIVER,
        "goog:chromeOptions": {"binary": CHROMIUM, "args": [*_HEADLESS, *args]},
    }


def standin_missing() -> str:
    """Why the WebView stand-in cannot run on this machine ("" when it can)."""
    from devicelab.platforms.appium_server import appium_home

    if not (appium_home() / "node_modules" / ".bin" / "appium").exists():
        return "Appium is not installed in tools/appium: run ./dev/setup"
    if not (Path(CHROMEDRIVER).exists() and Path(CHROMIUM).exists()):
        return "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
    return ""


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
