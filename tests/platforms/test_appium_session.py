"""devicelab.platforms.appium against a real Appium 3 server on loopback (tools/appium,
./dev/setup installs it): the fake driver for native contexts and errors, the chromium
driver (real chromedriver + Chromium, the protocol of an Android WebView) for the JS
channel the harness talks over.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import BadInput, DeviceUnreachable, ProbeFailed
from devicelab.journal import Entry, Journal
from devicelab.platforms.appium import (
    SESSION_KIND,
    UNDOERS,
    WEBVIEW_HINT,
    AppiumServer,
    AppiumSession,
    appium_home,
    check_capabilities,
    proxied_capabilities,
)
from devicelab.testing.standins import webview_capabilities

pytestmark = pytest.mark.skipif(
    not (appium_home() / "node_modules" / ".bin" / "appium").exists(),
    reason="Appium is not installed in tools/appium: run ./dev/setup",
)

FAKE_APP = """<app>
  <MockListView id="conversations"><MockListItem>Run conversation</MockListItem></MockListView>
  <MockWebView><html><head><title>app.messaging.test</title></head><body/></html></MockWebView>
</app>
"""
NO_WEBVIEW_APP = '<app><MockListView id="conversations"/></app>\n'


def chromium_caps(*args: str) -> dict[str, Any]:
    """A chromium-driver session: desktop Chromium standing in for a WebView."""
    return webview_capabilities(*args)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppiumServer]:
    log = tmp_path_factory.mktemp("appium") / "appium.log"
    with AppiumServer(log_file=log) as appium:
        yield appium


@pytest.fixture
def fake_caps(tmp_path: Path) -> dict[str, Any]:
    app = tmp_path / "app.xml"
    app.write_text(FAKE_APP)
    return {"platformName": "Fake", "appium:automationName": "Fake", "appium:app": str(app)}


def test_fake_driver_lists_and_switches_contexts(
    server: AppiumServer, fake_caps: dict[str, Any]
) -> None:
    with AppiumSession(server.url, fake_caps) as session:
        assert session.contexts() == ["NATIVE_APP", "PROXY", "WEBVIEW_1"]
        assert session.current_context() == "NATIVE_APP"
        assert session.switch_to_webview(None, timeout_s=2) == "WEBVIEW_1"
        assert session.current_context() == "WEBVIEW_1"
        session.switch_to_native()
        assert session.current_context() == "NATIVE_APP"
        info = session.info()
        assert info["automationName"] == "Fake" and info["session"] == session.session_id
        with pytest.raises(ProbeFailed, match="no such Appium context") as missing:
            session.switch_to("WEBVIEW_9")
        assert missing.value.hint == WEBVIEW_HINT


def test_a_webview_that_never_appears_names_the_contexts_and_the_hint(
    server: AppiumServer, tmp_path: Path
) -> None:
    app = tmp_path / "native-only.xml"
    app.write_text(NO_WEBVIEW_APP)
    caps = {"platformName": "Fake", "appium:automationName": "Fake", "appium:app": str(app)}
    with AppiumSession(server.url, caps) as session, pytest.raises(ProbeFailed) as error:
        session.switch_to_webview("app.messaging.test", timeout_s=1)
    assert "no WEBVIEW_app.messaging.test context appeared within 1 s" in error.value.message
    assert "contexts: NATIVE_APP, PROXY" in error.value.message
    assert "android.webContentsDebuggingEnabled" in error.value.hint


def test_session_errors_are_translated(server: AppiumServer) -> None:
    # The fake driver requires appium:app: Appium answers "session not created".
    with pytest.raises(DeviceUnreachable, match="the Appium session did not start") as error:
        AppiumSession(
            server.url, {"platformName": "Fake", "appium:automationName": "Fake"}
        ).create()
    assert "'app' is required" in error.value.message
    assert "selenium.dev" not in error.value.one_line() and "\n" not in error.value.one_line()
    # No driver for this automationName: Appium's 500 is still "did not start".
    with pytest.raises(DeviceUnreachable, match="Could not find a driver"):
        AppiumSession(
            server.url, {"platformName": "Fake", "appium:automationName": "Nope"}
        ).create()
    closed = AppiumServer(port=0)
    closed.port = _closed_port()
    with pytest.raises(DeviceUnreachable, match="no Appium server answers"):
        AppiumSession(closed.url, {"platformName": "Fake"}).create()


def test_bad_capabilities_are_refused_before_a_request() -> None:
    with pytest.raises(BadInput, match="automationName is not a W3C capability") as error:
        check_capabilities({"platformName": "Android", "automationName": "UiAutomator2"})
    assert error.value.hint == "write it with Appium's vendor prefix: appium:automationName"
    with pytest.raises(BadInput, match="has no platformName"):
        check_capabilities({"appium:automationName": "UiAutomator2"})
    with pytest.raises(BadInput):  # refused by the session too, before any HTTP
        AppiumSession("http://127.0.0.1:9", {"platformName": "Android", "app": "x"}).create()


def test_proxy_flags_go_to_browser_sessions_only() -> None:
    caps = chromium_caps("--proxy-server=http://old:1")
    proxied = proxied_capabilities(caps, "http://127.0.0.1:8080")
    args = proxied["goog:chromeOptions"]["args"]
    assert args[-2:] == ["--proxy-server=http://127.0.0.1:8080", "--proxy-bypass-list=<-loopback>"]
    assert "--proxy-server=http://old:1" not in args
    assert caps["goog:chromeOptions"]["args"][-1] == "--proxy-server=http://old:1"  # copied
    app = {"platformName": "Android", "appium:appPackage": "app.messaging.test"}
    assert proxied_capabilities(app, "http://127.0.0.1:8080") == app


def _holds_files(folder: Path) -> bool:
    try:
        return any(folder.iterdir())
    except OSError:  # removed meanwhile
        return False


def _new_chromium_folders(before: set[Path], wait_s: float = 10.0) -> set[Path]:
    """Chromium's folders in /tmp that were not there ``before`` and hold files, once
    Chromium had ``wait_s`` to remove its own as it exits (which can end after the
    session has). A leaked profile holds ~4 MB; an empty singleton folder is what
    Chromium leaves when chromedriver kills it (seen in about one CI run in five)."""
    deadline = time.monotonic() + wait_s
    while True:
        new = set(Path(tempfile.gettempdir()).glob("org.chromium.Chromium.*")) - before
        new = {folder for folder in new if _holds_files(folder)}
        if not new or time.monotonic() > deadline:
            return new
        time.sleep(0.2)


@pytest.mark.skipif(
    not (Path("/usr/bin/chromedriver").exists() and shutil.which("chromium")),
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
)
def test_the_js_channel_awaits_functions_in_chromium_through_the_chromium_driver(
    server: AppiumServer,
) -> None:
    leftovers = set(Path(tempfile.gettempdir()).glob("org.chromium.Chromium.*"))
    with AppiumSession(server.url, chromium_caps()) as session:
        assert session.is_browser
        session.open("data:text/html,<title>stand-in</title>")
        value = session.evaluate(
            "async (arg) => { await new Promise((r) => setTimeout(r, 50));"
            " return {sum: arg.a + arg.b, title: document.title}; }",
            {"a": 40, "b": 2},
        )
        assert value == {"sum": 42, "title": "stand-in"}
        assert session.evaluate("() => undefined") is None
        with pytest.raises(ProbeFailed, match="the page's script failed: boom"):
            session.evaluate("async () => { throw new Error('boom'); }")
        with pytest.raises(ProbeFailed, match="unknown command"):
            session.contexts()  # a browser session has no contexts API
        # DevTools through Appium's passthrough to chromedriver (as in an Android WebView).
        session.evaluate("() => { window.kept = Array.from({length: 200000}, (_, i) => i); }")
        session.cdp("HeapProfiler.collectGarbage")
        session.cdp("Performance.enable")
        metrics = {m["name"]: m["value"] for m in session.cdp("Performance.getMetrics")["metrics"]}
        assert metrics["JSHeapUsedSize"] > 800_000  # the 200,000 integers kept
        with pytest.raises(ProbeFailed, match=r"DevTools No\.Such\.Domain"):
            session.cdp("No.Such.Domain")
    session.close()  # idempotent
    # The stand-in's profile is its own: chromedriver's would stay in /tmp (~4 MB a session).
    assert _new_chromium_folders(leftovers) == set()


def test_each_stand_in_gets_a_profile_of_its_own() -> None:
    first, second = (webview_capabilities()["goog:chromeOptions"]["args"] for _ in range(2))
    dirs = [next(a for a in args if a.startswith("--user-data-dir=")) for args in (first, second)]
    assert dirs[0] != dirs[1] and all(Path(d.split("=", 1)[1]).is_dir() for d in dirs)
    given = webview_capabilities("--user-data-dir=/tmp/mine")["goog:chromeOptions"]["args"]
    assert [a for a in given if a.startswith("--user-data-dir=")] == ["--user-data-dir=/tmp/mine"]


def test_a_context_without_devtools_is_a_probe_failure(
    server: AppiumServer, fake_caps: dict[str, Any]
) -> None:
    # The fake driver, like XCUITest in an iOS WKWebView, has no DevTools passthrough.
    with AppiumSession(server.url, fake_caps) as session, pytest.raises(ProbeFailed) as error:
        session.cdp("Performance.getMetrics")
    assert "DevTools Performance.getMetrics" in error.value.message


def test_the_server_stops_with_its_drivers(tmp_path: Path) -> None:
    appium = AppiumServer(log_file=tmp_path / "appium.log").start()
    process = appium._process
    assert process is not None and process.poll() is None
    appium.stop()
    assert process.poll() is not None
    assert "Appium REST http interface listener started" in (tmp_path / "appium.log").read_text()
    appium.stop()  # idempotent


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_RUN_WITH_APPIUM = """
import sys, time
from pathlib import Path
from devicelab.platforms.appium import AppiumServer
server = AppiumServer(log_file=Path(sys.argv[1])).start()
print(server._process.pid, server.port, flush=True)
time.sleep(120)
"""


def test_appium_ends_with_a_run_killed_outright(tmp_path: Path) -> None:
    # SIGKILL runs no teardown: the guard sees its parent gone and ends Appium's process
    # group, so no node server keeps its port after a crashed run.
    import os
    import signal
    import socket
    import subprocess
    import sys

    import psutil

    run = subprocess.Popen(
        [sys.executable, "-c", _RUN_WITH_APPIUM, str(tmp_path / "appium.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stdout is not None
        guard_pid, port = (int(v) for v in run.stdout.readline().split())
        group = psutil.Process(guard_pid).children(recursive=True)
        assert any("node" in p.name() or "appium" in " ".join(p.cmdline()) for p in group)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
        _gone, alive = psutil.wait_procs([psutil.Process(guard_pid), *group], timeout=20)
        for proc in alive:
            proc.kill()
        assert not alive, f"outlived the run: {[p.cmdline()[:2] for p in alive]}"
        with socket.socket() as again:
            # SO_REUSEADDR: its closed connections may sit in TIME_WAIT (a CI run failed
            # on them); only a live listener still refuses the bind.
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))  # Appium's port is free again
    finally:
        if run.poll() is None:
            run.kill()


def test_appium_that_cannot_listen_says_why_and_keeps_its_words_in_the_log(
    tmp_path: Path,
) -> None:
    import socket

    log = tmp_path / "appium.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DeviceUnreachable) as caught:
            AppiumServer(port=port, log_file=log).start()
    message = caught.value.one_line()
    assert f"EADDRINUSE: address already in use 127.0.0.1:{port}" in message, message
    assert "another program listens on" in caught.value.hint
    assert "EADDRINUSE" in log.read_text()  # Appium's own words, not overwritten


def test_appium_on_a_port_it_picked_that_was_taken_meanwhile_picks_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 0: the free port picked was taken before node listened on it (two test workers
    # at once: another's outgoing connection got it); the start failed with EADDRINUSE.
    import socket

    from devicelab.platforms import appium_server
    from devicelab.ports import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        picks = iter([taken.getsockname()[1]])
        monkeypatch.setattr(appium_server, "free_port", lambda host: next(picks, free_port(host)))
        with AppiumServer(log_file=tmp_path / "appium.log") as server:
            assert server.port != taken.getsockname()[1]
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(server.url + "/status", timeout=10) as answer:
                assert json.loads(answer.read())["value"]["ready"] is True


_START_AND_DIE = """
import json, os, sys
from devicelab.journal import Journal
from devicelab.platforms.appium import AppiumSession
session = AppiumSession(sys.argv[1], json.loads(sys.argv[2])).create()
session.journaled(Journal(sys.argv[3]), "SERIAL1")
print(session.session_id, flush=True)
os._exit(9)  # killed outright: no close()
"""


def _session_alive(url: str, session: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/session/{session}/contexts", timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        assert exc.code == 404, exc
        return False


def test_a_session_left_by_a_run_killed_outright_is_ended_by_the_next(
    server: AppiumServer, fake_caps: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "journal.jsonl"
    args = [sys.executable, "-c", _START_AND_DIE, server.url, json.dumps(fake_caps), str(path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 9, done.stderr
    session = done.stdout.strip()
    assert _session_alive(server.url, session)  # open on the server, the phone busy
    [left] = Journal(path).pending()
    assert left.data["what"] == f"Appium session {session} on {server.url}"
    assert Journal(path, undoers=UNDOERS).recover() == []
    assert not _session_alive(server.url, session)
    assert Journal(path).pending() == []
    # A server that is gone took its sessions with it: nothing is left to end.
    gone = Entry(SESSION_KIND, "SERIAL1", {"url": "http://127.0.0.1:9", "session": "x"})
    UNDOERS[SESSION_KIND](gone)
