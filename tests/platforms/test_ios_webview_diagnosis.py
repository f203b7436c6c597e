"""What webinspectord's listing says when Appium finds no WebView in an iPhone app: the
decision alone, then end to end through pymobiledevice3's WebinspectorService and the
fake phone's webinspectord (devicelab.testing.fake_webinspector), and the run's error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devicelab.errors import ProbeFailed
from devicelab.lab_phone import _why_no_webview
from devicelab.models import Device
from devicelab.platforms.ios_webinspector import diagnose_webview, judge
from devicelab.testing.fake_usbmuxd import FakeIPhone, FakeUsbmuxd
from devicelab.testing.fake_webinspector import FakeWebView

APP = "app.messaging.test"
OWN = "OUR-CONNECTION"


def _app(bundle: str, app_id: str) -> Any:
    return SimpleNamespace(bundle=bundle, id_=app_id)


def _page(app: Any, kind: str, url: str = "capacitor://localhost/", held_by: str = "") -> Any:
    page = SimpleNamespace(type_=SimpleNamespace(value=kind), web_url=url,
                           web_connection_id=held_by)  # fmt: skip
    return SimpleNamespace(application=app, page=page)


def test_an_app_that_is_not_reported_is_named_with_what_is() -> None:
    safari = _app("com.apple.mobilesafari", "PID:12")
    found = judge(APP, [safari], [_page(safari, "WIRTypeWebPage")], OWN)
    assert found.state == "app_absent"
    assert "com.apple.mobilesafari" in found.cause and "app.id" in found.hint


def test_an_app_without_an_inspectable_page_points_at_is_inspectable() -> None:
    app = _app(APP, "PID:345")
    # A JSContext is inspectable, the page is not: still no WebView for Appium.
    found = judge(APP, [app], [_page(app, "WIRTypeJavaScript", url="")], OWN)
    assert found.state == "not_inspectable"
    assert "ios.webContentsDebuggingEnabled" in found.hint
    assert found.pages == ("WIRTypeJavaScript",)


def test_a_page_held_by_another_inspector_is_reported_as_taken() -> None:
    app = _app(APP, "PID:345")
    listed = [_page(app, "WIRTypeWebPage", held_by="SAFARI-ON-THE-MAC")]
    found = judge(APP, [app], listed, OWN)
    assert found.state == "taken"
    assert "Safari's Web Inspector" in found.hint
    # Our own connection does not count as someone else's.
    assert judge(APP, [app], [_page(app, "WIRTypeWebPage", held_by=OWN)], OWN).state == "free"


def test_a_free_page_on_older_ios_points_at_appium() -> None:
    app = _app(APP, "PID:345")
    found = judge(APP, [app], [_page(app, "WIRTypePage")], OWN)
    assert found.state == "free"
    assert "webviewConnectTimeout" in found.hint


# --- through pymobiledevice3 and the fake phone -------------------------------------------
FREE = "00008030-0000000000000001"
HIDDEN = "00008030-0000000000000002"
OFF = "00008030-0000000000000003"
TAKEN = "00008030-0000000000000004"


@pytest.fixture(scope="module")
def usbmuxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUsbmuxd]:
    pytest.importorskip("pymobiledevice3")
    home = tmp_path_factory.mktemp("home")  # pymobiledevice3 caches pair records there
    with pytest.MonkeyPatch.context() as env, FakeUsbmuxd() as mux:
        env.setenv("HOME", str(home))
        env.setenv("USBMUXD_SOCKET_ADDRESS", mux.address)
        view = FakeWebView(bundle_id=APP)
        mux.attach(FakeIPhone(FREE, webviews=[view]))
        hidden = FakeWebView(bundle_id=APP, inspectable=False)
        mux.attach(FakeIPhone(HIDDEN, webviews=[hidden]))
        mux.attach(FakeIPhone(OFF, webviews=[view], web_inspector=False))
        held = FakeWebView(bundle_id=APP, inspected_by="SAFARI-ON-A-MAC")
        mux.attach(FakeIPhone(TAKEN, webviews=[held]))
        yield mux


@pytest.mark.parametrize(
    ("udid", "bundle", "state"),
    [
        (FREE, APP, "free"),
        (FREE, "com.other.app", "app_absent"),
        (HIDDEN, APP, "not_inspectable"),
        (OFF, APP, "inspector_off"),
        (TAKEN, APP, "taken"),
    ],
)
def test_webinspectord_of_the_phone_tells_why(
    usbmuxd: FakeUsbmuxd, udid: str, bundle: str, state: str
) -> None:
    found = diagnose_webview(udid, bundle)
    assert found.state == state, found
    if state == "app_absent":
        assert APP in found.cause  # what it does report
    if state == "free":
        assert found.pages == ("WIRTypeWebPage capacitor://localhost/",)


def test_the_run_error_keeps_appiums_words_and_adds_the_cause(
    usbmuxd: FakeUsbmuxd, tmp_path: Path
) -> None:
    device = Device(id="iphone", platform="ios", model="iPhone 11", os="iOS 17", udid=HIDDEN)
    appium = ProbeFailed("no WEBVIEW_* context appeared within 1 s (contexts: NATIVE_APP)",
                         hint="enable WebView debugging", command="get contexts")  # fmt: skip
    error = _why_no_webview(device, APP, appium)
    assert error.message.startswith("no WEBVIEW_* context appeared within 1 s")
    assert "lists no inspectable web page" in error.message
    assert "ios.webContentsDebuggingEnabled" in error.hint
    assert error.command == "get contexts"
    # A phone that cannot be asked leaves Appium's error as it was.
    gone = device.model_copy(update={"udid": "00008030-00000000000000FF"})
    assert _why_no_webview(gone, APP, appium) is appium


def test_iphone_sessions_collect_garbage_before_each_script_unless_told_otherwise() -> None:
    from devicelab.lab_phone import GC_CAPABILITY, iphone_capabilities

    xcuitest = {"platformName": "iOS", "appium:automationName": "XCUITest"}
    assert iphone_capabilities(xcuitest)[GC_CAPABILITY] is True
    assert iphone_capabilities({**xcuitest, GC_CAPABILITY: False})[GC_CAPABILITY] is False
    # A browser standing in for the WebView is not an XCUITest session.
    assert GC_CAPABILITY not in iphone_capabilities({"browserName": "chrome"})
