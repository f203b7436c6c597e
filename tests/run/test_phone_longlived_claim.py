"""A long-lived process (a notebook, a farm script, pytest.main called twice) runs one
iPhone session after another: each session lets the phone go at its end, so the next
one in the same process, and any other process, can take it; so does a start that fails
after the phone was claimed (iPhone and android). Through the real journal and
pymobiledevice3 talking to the fake usbmuxd, the fake android phone behind the real adb
server.

The sessions stop at the Appium check (something that is not Appium answers at the
inventory's URL), after the phone was attached and claimed: the teardown that lets it
go is the same one a session that ran its checks goes through.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devicelab.errors import DeviceUnreachable
from devicelab.lab import Lab
from devicelab.testing.fake_adbd import FakeAdbd, ShellResult
from devicelab.testing.fake_usbmuxd import FakeIPhone, FakeUsbmuxd

pytest.importorskip("pymobiledevice3")

UDID = "00008030-001A2B3C4D5E802E"
_TAKE = """
import sys
from devicelab.journal import Journal
Journal(sys.argv[1]).claim(sys.argv[2], "in use").release()
print("taken")
"""


class _NotAppium(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_appium() -> Iterator[str]:
    """The URL of a loopback HTTP server that is not Appium (404 on /status)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAppium)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, not_appium: str) -> Iterator[Path]:
    """An iPhone on a fake usbmuxd, DEVICELAB_STATE in ``tmp_path``."""
    monkeypatch.setenv("DEVICELAB_STATE", str(tmp_path / "state"))
    with FakeUsbmuxd([FakeIPhone(UDID)]) as mux:
        for key, value in mux.env.items():
            monkeypatch.setenv(key, value)
        phone = {
            "platform": "ios", "model": "iPhone 16", "os": "iOS 18", "udid": UDID,
            "app": {"id": "app.messaging.test"},
            "proxy": {"listen": "127.0.0.1:8899", "allow": ["127.0.0.1/32"]},
            "appium": {"url": not_appium, "capabilities": {
                "platformName": "iOS", "appium:automationName": "XCUITest",
                "appium:udid": UDID}},
        }  # fmt: skip
        path = tmp_path / "inventory.yaml"
        path.write_text(yaml.safe_dump({"devices": {"iphone16": phone}}))
        yield path


def _open_claims(state: Path) -> list[str]:
    """The claim files under ``state`` this process holds open (each holds a phone)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue  # closed since listed
        if target.parent == state / "claims":
            found.append(str(target))
    return found


def test_each_iphone_session_in_one_process_lets_the_phone_go(
    inventory: Path, tmp_path: Path
) -> None:
    for i in range(3):
        lab = Lab("iphone16", "none", inventory=inventory, scenarios=["conversation_list_load"])
        # Refused for what it is (not Appium), never "already in use" by an earlier one.
        refused = pytest.raises(DeviceUnreachable, match="not an Appium server")
        with refused, lab.session(tmp_path / f"o{i}"):
            pass
        assert _open_claims(tmp_path / "state") == []  # one fd a session, before
    # While this process lives, another one can take the phone.
    journal = tmp_path / "state" / "journal.jsonl"
    taken = subprocess.run(
        [sys.executable, "-c", _TAKE, str(journal), UDID],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert taken.stdout == "taken\n", taken.stderr


@pytest.mark.slow
def test_iphone_sessions_one_after_another_in_one_process_each_measure(
    standins: None, app_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tester's loop: two sessions on the same iPhone in one process, each measuring
    (the Chromium stand-in on a real Appium for the app's WebView)."""
    from devicelab.platforms.appium import AppiumServer
    from devicelab.testing.adb_server import free_port
    from devicelab.testing.standins import lab_state, webview_capabilities

    with lab_state("dl-longlived-ios-") as env, FakeUsbmuxd([FakeIPhone(UDID)]) as mux:
        for key in ("DEVICELAB_STATE", "HOME"):
            monkeypatch.setenv(key, env[key])
        monkeypatch.setenv("DEVICELAB_TUNNELD", f"127.0.0.1:{free_port()}")
        for key, value in mux.env.items():
            monkeypatch.setenv(key, value)
        port = free_port()
        wifi_proxy = [f"--proxy-server=http://127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>"]
        log = Path(env["DEVICELAB_STATE"]) / "appium.log"
        with AppiumServer(log_file=log) as appium:
            phone = {
                "platform": "ios", "model": "iPhone 16", "os": "iOS 18", "udid": UDID,
                "app": {"id": "app.messaging.test"},
                "proxy": {"listen": f"127.0.0.1:{port}", "allow": ["127.0.0.1/32"]},
                "appium": {"url": appium.url, "capabilities": webview_capabilities(*wifi_proxy)},
            }  # fmt: skip
            inventory = tmp_path / "inventory.yaml"
            inventory.write_text(yaml.safe_dump({"devices": {"iphone16": phone}}))
            for i in range(2):
                lab = Lab("iphone16", "none", inventory=inventory)
                with lab.session(tmp_path / f"o{i}") as session:
                    check = session.measure("conversation_list_load", query_count=2)
                assert check.status in ("pass", "fail"), check.reason
            # Let go at the end: another process can take the phone while this one lives.
            journal = Path(env["DEVICELAB_STATE"]) / "journal.jsonl"
            taken = subprocess.run(
                [sys.executable, "-c", _TAKE, str(journal), UDID],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert taken.stdout == "taken\n", taken.stderr


def test_an_iphone_whose_lockdownd_cannot_be_reached_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The phone is claimed before lockdownd is read: a start that fails there lets it go
    (no session took it to let go at its end)."""
    from devicelab.errors import DeviceUnreachable as Unreachable
    from devicelab.journal import Journal
    from devicelab.models import Device
    from devicelab.platforms.ios_device import IosDevice

    monkeypatch.setenv("DEVICELAB_STATE", str(tmp_path / "state"))
    device = Device.model_validate(
        {"id": "iphone16", "platform": "ios", "model": "iPhone 16", "os": "iOS 18", "udid": UDID}
    )
    with FakeUsbmuxd([FakeIPhone(UDID, lockdown=False)]) as mux:
        for key, value in mux.env.items():
            monkeypatch.setenv(key, value)
        for _ in range(2):  # the second is refused for the same reason, not "in use"
            with pytest.raises(Unreachable, match="lockdownd"):
                IosDevice(device, journal=Journal()).create()
    Journal().claim(UDID, "in use").release()


def test_an_android_phone_whose_start_fails_after_the_claim_is_let_go(
    fake: FakeAdbd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on android: getprop failing after the claim lets the phone go."""
    from devicelab.errors import ProbeFailed
    from devicelab.journal import Journal
    from devicelab.models import Device
    from devicelab.platforms.android_device import AndroidDevice

    monkeypatch.setenv("DEVICELAB_STATE", str(tmp_path / "state"))
    device = Device.model_validate(
        {"id": "phone", "platform": "android", "model": "Pixel 6", "os": "Android 13",
         "serial": fake.serial}
    )  # fmt: skip
    fake.on("getprop", lambda _command: ShellResult("", "getprop: broken\n", 1))
    try:
        for _ in range(2):  # the second is refused for the same reason, not "in use"
            with pytest.raises(ProbeFailed, match="getprop"):
                AndroidDevice(device, Journal()).create()
    finally:
        fake.off("getprop")
    Journal().claim(fake.serial, "in use").release()
