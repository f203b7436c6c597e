"""Why Appium sees no WebView in an iPhone app: what webinspectord says about it.

Appium's XCUITest driver reaches a WKWebView through the phone's Web Inspector service
(``webinspectord``, lockdown service ``com.apple.webinspector``). When no ``WEBVIEW_*``
context appears, Appium cannot say why; webinspectord can. :func:`diagnose_webview` asks
it (pymobiledevice3's ``WebinspectorService``, the ``ios`` extra) and returns one of:

- Web Inspector is off on the phone (Settings > Apps > Safari > Advanced);
- the app is not among the applications webinspectord reports (not running, or no
  WebKit content yet);
- the app is there with no inspectable page: the WebView's ``isInspectable`` is false,
  which is the default from iOS 16.4 on (Capacitor: ``ios.webContentsDebuggingEnabled``);
- the page is there but another Web Inspector holds it (WebKit serves one inspector
  connection per page: Safari's Develop menu on a Mac, or a stale Appium session);
- the page is there and free (then Appium's own settings are the suspects).

It only lists applications and pages: it never attaches to a page, so it cannot take the
page from anyone. It runs only after Appium failed to find the WebView.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["WebViewDiagnosis", "diagnose_webview", "judge"]

_LISTING_WAIT_S = 1.0
_TIMEOUT_S = 20.0
_SETTINGS_PATH = "Settings > Apps > Safari > Advanced > Web Inspector"
_INSPECTABLE_HINT = (
    "make the WebView inspectable: Capacitor ios.webContentsDebuggingEnabled: true in "
    "capacitor.config (WKWebView.isInspectable, off by default from iOS 16.4), then rebuild"
)


@dataclass(frozen=True)
class WebViewDiagnosis:
    """What webinspectord says about the app's WebView: ``cause`` (one line) and ``hint``
    (what to do). ``state`` is one of ``inspector_off``, ``app_absent``,
    ``not_inspectable``, ``taken``, ``free``; ``pages`` the app's pages as
    ``type url`` strings."""

    state: str
    cause: str
    hint: str
    pages: tuple[str, ...] = ()


def diagnose_webview(
    udid: str, bundle_id: str | None, *, usbmux_address: str | None = None
) -> WebViewDiagnosis:
    """Ask the phone ``udid``'s webinspectord about the app ``bundle_id`` (None: any
    app's page). Returns the diagnosis; raises ToolMissing without pymobiledevice3,
    DeviceUnreachable when the phone, its lockdownd or its webinspectord cannot be reached
    or does not answer within 20 s."""
    from devicelab.errors import DeviceUnreachable
    from devicelab.platforms.ios import run_private

    try:
        return run_private(lambda: _diagnose(udid, bundle_id, usbmux_address), _TIMEOUT_S)
    except TimeoutError as exc:
        raise DeviceUnreachable(
            f"webinspectord of {udid} did not answer within {_TIMEOUT_S:g} s",
            hint="unlock the iPhone; check `pymobiledevice3 webinspector opened-tabs`",
            serial=udid,
            command="pymobiledevice3 webinspector opened-tabs",
        ) from exc


async def _diagnose(
    udid: str, bundle_id: str | None, usbmux_address: str | None
) -> WebViewDiagnosis:
    from devicelab.errors import DeviceUnreachable, ToolMissing
    from devicelab.platforms.ios import open_lockdown

    try:
        from pymobiledevice3.exceptions import (
            PyMobileDevice3Exception,
            WebInspectorNotEnabledError,
        )
        from pymobiledevice3.services.webinspector import WebinspectorService
    except ImportError as exc:
        raise ToolMissing("pymobiledevice3", hint="pip install 'devicelab[ios]'") from exc

    def unreachable(exc: BaseException, what: str) -> DeviceUnreachable:
        return DeviceUnreachable(
            f"pymobiledevice3 could not reach the {what} of {udid}: "
            f"{str(exc) or type(exc).__name__}",
            hint="unlock the iPhone and trust this computer",
            serial=udid,
            command="pymobiledevice3 webinspector opened-tabs",
        )

    try:
        lockdown = await open_lockdown(udid, usbmux_address)
    except (PyMobileDevice3Exception, OSError) as exc:
        raise unreachable(exc, "lockdownd") from exc
    async with lockdown:
        inspector = WebinspectorService(lockdown)
        try:
            await inspector.connect()
            listed = await inspector.get_open_application_pages(timeout=_LISTING_WAIT_S)
            apps = list(inspector.connected_application.values())
        except WebInspectorNotEnabledError:
            return WebViewDiagnosis(
                "inspector_off",
                f"Web Inspector is off on {udid}: Appium cannot reach any WebView",
                f"turn it on: {_SETTINGS_PATH}",
            )
        except (PyMobileDevice3Exception, OSError, EOFError) as exc:
            raise unreachable(exc, "webinspectord") from exc
        finally:
            await inspector.close()  # type: ignore[no-untyped-call]
    return judge(bundle_id, apps, listed, inspector.connection_id)


def _is_web(kind: str) -> bool:
    # WIRTypeWeb / WIRTypeWebPage today; WIRTypePage on older iOS.
    return kind.startswith("WIRTypeWeb") or kind == "WIRTypePage"


def judge(bundle_id: str | None, apps: list[Any], listed: list[Any], own: str) -> WebViewDiagnosis:
    """The diagnosis from webinspectord's applications (``Application``) and pages
    (``ApplicationPage``); ``own`` is our connection's identifier (a page held by it is
    not taken by someone else)."""
    name = bundle_id or "the app"
    mine = [a for a in apps if bundle_id is None or a.bundle == bundle_id]
    if not mine:
        others = sorted({a.bundle for a in apps})
        return WebViewDiagnosis(
            "app_absent",
            f"webinspectord does not report {name} (it reports: "
            f"{', '.join(others) or 'no application'})",
            f"make sure {name} is running in front and has loaded its WebView; check the "
            "inventory's app.id (the bundle id)",
        )
    ids = {a.id_ for a in mine}
    pages = [p.page for p in listed if p.application.id_ in ids]
    kinds = [str(getattr(p.type_, "value", p.type_)) for p in pages]
    webpages = [p for p, kind in zip(pages, kinds, strict=True) if _is_web(kind)]
    described = tuple(f"{kind} {p.web_url}".strip() for p, kind in zip(pages, kinds, strict=True))
    if not webpages:
        return WebViewDiagnosis(
            "not_inspectable",
            f"{name} runs but lists no inspectable web page",
            _INSPECTABLE_HINT,
            described,
        )
    taken = [p for p in webpages if p.web_connection_id and p.web_connection_id != own]
    if len(taken) == len(webpages):
        return WebViewDiagnosis(
            "taken",
            f"another Web Inspector is attached to {name}'s WebView ({webpages[0].web_url}); "
            "WebKit serves one inspector per page",
            "close Safari's Web Inspector for this page (Develop menu on the Mac) or any "
            "other Appium session on the phone, then retry",
            described,
        )
    return WebViewDiagnosis(
        "free",
        f"webinspectord lists {name}'s WebView ({webpages[0].web_url}) and nobody holds it",
        "Appium did not attach in time: raise appium:webviewConnectTimeout and "
        "appium:autoWebviewTimeout, and see Appium's log for its remote debugger",
        described,
    )
