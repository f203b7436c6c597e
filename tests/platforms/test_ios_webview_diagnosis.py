"""What webinspectord's listing says when Appium finds no WebView in an iPhone app: the
decision alone (the listing through pymobiledevice3 and the fake phone is in
tests/run/test_run_ios.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from devicelab.platforms.ios_webinspector import judge

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
