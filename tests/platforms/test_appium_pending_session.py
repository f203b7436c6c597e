"""A session a run leaves while Appium is still starting it (POST /session in flight when
the run is killed outright) is journaled by a claim token before the request, and the
next run on the phone ends it through Appium 3's session discovery, against a real
Appium 3 with the fake driver (docs/appium.md, "A session nobody ends").

The fake driver reads its app file when it creates the session: a FIFO as that file holds
the creation until the test writes the app into it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devicelab.journal import Journal
from devicelab.platforms import appium_server
from devicelab.platforms.appium import (
    PENDING_KIND,
    SESSION_KIND,
    UNDOERS,
    AppiumServer,
    AppiumSession,
    appium_home,
)

pytestmark = pytest.mark.skipif(
    not (appium_home() / "node_modules" / ".bin" / "appium").exists(),
    reason="Appium is not installed in tools/appium: run ./dev/setup",
)

APP = "<app><MockWebView><html><head><title>app</title></head><body/></html></MockWebView></app>"

# A run that starts its session and is killed while Appium creates it.
_START = """
import json, sys
from devicelab.journal import Journal
from devicelab.platforms.appium import AppiumSession
AppiumSession(sys.argv[1], json.loads(sys.argv[2])).create(Journal(sys.argv[3]), "SERIAL1")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppiumServer]:
    """devicelab's own local Appium: session discovery on."""
    log = tmp_path_factory.mktemp("appium") / "appium.log"
    with AppiumServer(log_file=log) as appium:
        yield appium


@pytest.fixture
def undiscovering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppiumServer]:
    """An Appium started without session discovery (a lab's server as many run it)."""
    guarded = appium_server.guarded

    def without(command: list[str]) -> list[str]:
        if "--allow-insecure" in command:
            at = command.index("--allow-insecure")
            command = command[:at] + command[at + 2 :]
        return guarded(command)

    monkeypatch.setattr(appium_server, "guarded", without)
    with AppiumServer(log_file=tmp_path / "appium.log") as appium:
        yield appium


def _call(method: str, url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, method=method), timeout=30) as answer:
        return json.loads(answer.read())


def _sessions(server: AppiumServer) -> dict[str, dict[str, Any]]:
    """The server's sessions and their capabilities, by id ({} without discovery)."""
    with contextlib.suppress(urllib.error.HTTPError):
        return {
            s["id"]: s["capabilities"]
            for s in _call("GET", f"{server.url}/appium/sessions")["value"]
        }
    return {}


def _wait(condition: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _killed_while_starting(server: AppiumServer, tmp_path: Path) -> tuple[Path, Path]:
    """Run a process that journals and starts a fake-driver session, SIGKILL it while
    Appium holds the creation (reading the FIFO app); returns the journal and the FIFO."""
    fifo = tmp_path / "app.xml"
    os.mkfifo(fifo)
    path = tmp_path / "journal.jsonl"
    caps = {"platformName": "Fake", "appium:automationName": "Fake", "appium:app": str(fifo)}
    args = [sys.executable, "-c", _START, server.url, json.dumps(caps), str(path)]
    log = Path(server.log_file)
    reading = f"Loading Mock app model at {fifo}"
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: reading in log.read_text(), "Appium to start creating the session")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    return path, fifo


def _release(fifo: Path) -> None:
    """Let Appium finish creating the session: write the app into the FIFO it reads."""
    with fifo.open("w") as app:  # Appium already waits in open(): this does not block
        app.write(APP)


def test_a_session_killed_while_starting_is_ended_by_the_next_run(
    server: AppiumServer, tmp_path: Path
) -> None:
    path, fifo = _killed_while_starting(server, tmp_path)
    [pending] = Journal(path).pending()
    assert pending.kind == PENDING_KIND and pending.target == "SERIAL1"
    assert pending.data["what"].startswith(f"Appium session starting on {server.url}")
    claim = pending.data["claim"]
    # Appium has not listed it yet: the entry stays for the next run to look again.
    failures = Journal(path, undoers=UNDOERS).recover()
    assert [entry.id for entry, _ in failures] == [pending.id]
    _release(fifo)
    _wait(lambda: any(c.get("devicelabClaim") == claim for c in _sessions(server).values()),
          "the session the killed run left to start")  # fmt: skip
    [left] = [i for i, c in _sessions(server).items() if c.get("devicelabClaim") == claim]
    assert Journal(path, undoers=UNDOERS).recover() == []
    assert left not in _sessions(server)  # ended: the phone is free
    assert Journal(path).pending() == []


def test_without_discovery_the_recovery_says_what_to_do_and_drops_the_entry(
    undiscovering: AppiumServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, fifo = _killed_while_starting(undiscovering, tmp_path)
    _release(fifo)
    log = Path(undiscovering.log_file)
    _wait(lambda: "added to master session list" in log.read_text(), "the session to start")
    [pending] = Journal(path).pending()
    assert pending.kind == PENDING_KIND
    with caplog.at_level(logging.INFO):
        assert Journal(path, undoers=UNDOERS).recover() == []
    [warning] = [r.getMessage() for r in caplog.records if "session discovery" in r.getMessage()]
    assert "\n" not in warning, warning
    assert pending.data["claim"] in warning, warning
    assert "--allow-insecure=*:session_discovery" in warning, warning
    assert "newCommandTimeout" in warning and "A session nobody ends" in warning, warning
    assert Journal(path).pending() == []  # dropped: it never blocks a run


@pytest.fixture
def fake_caps(tmp_path: Path) -> dict[str, Any]:
    app = tmp_path / "app.xml"
    app.write_text(APP)
    return {"platformName": "Fake", "appium:automationName": "Fake", "appium:app": str(app)}


def test_a_started_session_replaces_its_pending_entry_and_ends_as_before(
    server: AppiumServer, fake_caps: dict[str, Any], tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl", undoers=UNDOERS)
    session = AppiumSession(server.url, fake_caps).create(journal, "SERIAL1")
    try:
        assert session.pending is None and session.entry is not None
        [entry] = journal.pending()  # the pending entry is settled, the session's stays
        assert entry.kind == SESSION_KIND and entry.data["session"] == session.session_id
        assert _sessions(server)[session.session_id]["devicelabClaim"]  # the claim it sent
        # Its undo (a run killed now) is DELETE /session/ID, as before.
        assert journal.undo([entry]) == []
        assert session.session_id not in _sessions(server)
        assert journal.pending() == []
    finally:
        session.close()


def test_a_session_appium_refuses_to_start_leaves_nothing_pending(
    server: AppiumServer, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl", undoers=UNDOERS)
    session = AppiumSession(server.url, {"platformName": "Fake", "appium:automationName": "Fake"})
    with pytest.raises(Exception, match="the Appium session did not start"):
        session.create(journal, "SERIAL1")  # the fake driver requires appium:app
    assert session.pending is None
    assert journal.pending() == []
