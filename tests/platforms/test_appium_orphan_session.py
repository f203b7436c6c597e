"""A session a run killed mid-creation left open on the lab's Appium holds the stand-in's
Chromium profile: the next session does not start ("Chrome instance exited"), and the
error's hint names how to list and end the orphan, which the test then follows, through
a real Appium 3 with the chromium driver (docs/appium.md, "A session nobody ends")."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from devicelab.errors import DeviceUnreachable
from devicelab.platforms.appium import AppiumServer, AppiumSession
from devicelab.testing.standins import CHROMIUM, webview_capabilities


@pytest.fixture(scope="module")
def server(standins: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppiumServer]:
    log = tmp_path_factory.mktemp("appium") / "appium.log"
    with AppiumServer(log_file=log) as appium:
        yield appium


def _call(method: str, url: str) -> object:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, method=method), timeout=60) as response:
        return json.loads(response.read())


def _with_profile(capabilities: dict[str, Any]) -> list[psutil.Process]:
    """The processes (this test's stand-in Chromium) running with the capabilities'
    --user-data-dir."""
    (flag,) = [a for a in capabilities["goog:chromeOptions"]["args"] if "user-data-dir" in a]
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if flag in (process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.mark.slow
def test_the_hint_names_how_to_end_a_session_nobody_ends(server: AppiumServer) -> None:
    capabilities = webview_capabilities()  # one profile folder, as each run's inventory
    orphan = AppiumSession(server.url, capabilities)
    orphan.create()  # its run "killed" before it learnt the id: nobody will close it
    try:
        with pytest.raises(DeviceUnreachable, match="the Appium session did not start") as error:
            AppiumSession(server.url, capabilities).create()
        hint = error.value.hint
        assert "Chrome instance exited" in error.value.message, error.value.message
        ending = re.search(r"`curl -X DELETE (\S+)/session/ID`", hint)
        assert ending and "session ID added to master session list" in hint, hint
        # What the hint says, done: the orphan's ID from the log, ended; the next starts.
        log = Path(server.log_file).read_text()
        found = re.findall(r"session (\S+) added to master session list", log)
        assert found == [orphan.session_id], found
        _call("DELETE", f"{ending.group(1)}/session/{found[0]}")
        # The failed start handed its window to the orphan's Chromium, which the DELETE
        # then leaves running on the profile: stopped as the hint says.
        for process in _with_profile(capabilities):
            process.kill()
        deadline = time.monotonic() + 20
        while True:
            fresh = AppiumSession(server.url, capabilities)
            try:
                fresh.create()
                break
            except DeviceUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        fresh.close()
    finally:
        orphan.close()


@pytest.mark.slow
def test_ctrl_c_while_the_session_starts_ends_it_once_started(
    server: AppiumServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A browser that takes 3 s to start: the Ctrl-C surely lands while Appium creates the
    # session. Before, the client gave up the request and the session it never learnt of
    # held the profile until newCommandTimeout (the next start: "Chrome instance exited").
    slow = tmp_path / "slow-chromium"
    slow.write_text(f'#!/bin/sh\nsleep 3\nexec {CHROMIUM} "$@"\n')
    slow.chmod(0o755)
    capabilities = webview_capabilities()
    capabilities["goog:chromeOptions"]["binary"] = str(slow)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt), caplog.at_level(logging.INFO):
            AppiumSession(server.url, capabilities).create()
    finally:
        timer.cancel()
    assert "interrupted while Appium" in caplog.text, caplog.text
    ended = re.search(r"ended the Appium session (\S+) it had started", caplog.text)
    assert ended, caplog.text
    log = Path(server.log_file).read_text()
    assert ended.group(1) in re.findall(r"session (\S+) added to master session list", log)
    # Nothing holds the profile: the next session on it starts at once.
    capabilities["goog:chromeOptions"]["binary"] = CHROMIUM
    with AppiumSession(server.url, capabilities) as fresh:
        assert fresh.session_id
