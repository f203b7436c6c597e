"""A run's own Appium server, and its own per-session ports: several runs on one machine
(a battery farm's phones) never share a server that one of them stops, nor a driver port."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devicelab.errors import DeviceUnreachable
from devicelab.files import locked_folder
from devicelab.lab_phone import _appium_url
from devicelab.platforms.appium import AppiumServer, appium_home, own_ports
from devicelab.ports import free_port
from devicelab.teardown import Teardown

needs_appium = pytest.mark.skipif(
    not (appium_home() / "node_modules" / ".bin" / "appium").exists(),
    reason="Appium is not installed in tools/appium: run ./dev/setup",
)


def _ready(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/status", timeout=5) as answer:
            return bool(json.loads(answer.read())["value"]["ready"])
    except OSError:
        return False


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and an Appium-like status, as another run's server."""

    def do_GET(self) -> None:
        body = json.dumps({"value": {"ready": True}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    """The port of a server that answers /status with 200 and is not ours."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@needs_appium
def test_a_server_whose_port_another_answers_on_is_not_taken_for_ours(
    tmp_path: Path, impostor: int
) -> None:
    # The 200 of the other server's /status came before ours failed to listen: the run
    # used the other one (and its teardown later stopped it under the run that owned it).
    with pytest.raises(DeviceUnreachable, match=r"EADDRINUSE.*another server answers there"):
        AppiumServer(port=impostor, log_file=tmp_path / "appium.log").start()


@needs_appium
def test_a_picked_port_another_answers_on_is_picked_again(
    tmp_path: Path, impostor: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devicelab.platforms import appium_server

    picks = iter([impostor])
    monkeypatch.setattr(appium_server, "free_port", lambda host: next(picks, free_port(host)))
    with AppiumServer(log_file=tmp_path / "appium.log") as server:
        assert server.port != impostor
        assert server._listening() is True  # ours answers, not the other


@needs_appium
def test_runs_naming_one_appium_url_each_start_their_own(tmp_path: Path) -> None:
    # Two runs (a farm's phones) whose inventory names one loopback URL with nothing on it.
    url = f"http://127.0.0.1:{free_port()}"
    said: list[str] = []
    first, second = Teardown(said.append), Teardown(said.append)
    try:
        one = _appium_url(first, url, tmp_path / "one", said.append)
        two = _appium_url(second, url, tmp_path / "two", said.append)
        assert len({one, two, url}) == 3
        first.run()  # the first run ends ...
        assert not _ready(one)
        assert _ready(two)  # ... and the second's server goes on
    finally:
        first.run()
        second.run()
    assert not _ready(two)
    assert any(f"Appium for this run at {one}" in line for line in said)


UIA2 = {"appium:systemPort", "appium:chromedriverPort"}
XCUI = {"appium:wdaLocalPort", "appium:webkitDebugProxyPort"}
BROWSER = {"appium:chromedriverPort"}


@pytest.mark.parametrize(
    ("capabilities", "filled"),
    [
        ({"appium:automationName": "UiAutomator2"}, UIA2),
        ({"appium:automationName": "XCUITest"}, XCUI),
        ({"browserName": "chrome", "appium:automationName": "Chromium"}, BROWSER),
        ({"appium:automationName": "Fake"}, set()),
    ],
)  # fmt: skip
def test_each_session_gets_its_drivers_ports_of_its_own(
    capabilities: dict[str, str], filled: set[str]
) -> None:
    one, two = own_ports(capabilities), own_ports(capabilities)
    assert set(one) - set(capabilities) == filled
    for name in filled:
        assert isinstance(one[name], int) and one[name] != two[name]
    assert capabilities == dict(capabilities)  # not changed in place


def test_ports_the_inventory_sets_are_kept() -> None:
    given = {"appium:automationName": "UiAutomator2", "appium:systemPort": 8201}
    assert own_ports(given)["appium:systemPort"] == 8201


@needs_appium
def test_appium_servers_of_one_home_start_one_at_a_time(tmp_path: Path) -> None:
    # Starting Appiums rewrite the home's extension manifest in place when its drivers
    # changed: one started meanwhile read it half written and exited ("invalid YAML").
    started: list[AppiumServer] = []
    server = AppiumServer(log_file=tmp_path / "appium.log")
    with locked_folder(appium_home()):  # another start under way
        thread = threading.Thread(target=lambda: started.append(server.start()))
        thread.start()
        thread.join(timeout=2.0)
        assert thread.is_alive() and server._process is None  # not launched meanwhile
    thread.join(timeout=60)
    try:
        assert started == [server] and _ready(server.url)
    finally:
        server.stop()
