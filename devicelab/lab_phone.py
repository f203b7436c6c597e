"""The phone steps of a device run (android and ios), for :class:`devicelab.lab.Lab`.

A phone run differs from a web run in four places, all here:

- before anything starts, the inventory entry is checked (an Appium endpoint with valid
  capabilities; an iPhone also needs ``proxy``: the address its Wi-Fi proxy names) and
  the phone is attached (android: the adb server; ios: usbmuxd and lockdownd), so an
  absent phone fails the run before the backend starts;
- the shaped proxy: the lab backend gets a name that only the proxy resolves
  (:data:`BACKEND_ALIAS`), since a phone's 127.0.0.1 is
  the phone; an iPhone's proxy listens where the inventory says, for the networks it
  allows (plus this machine's loopback, for the self-check);
- the app: the phone is routed through the proxy (android: adb reverse + http_proxy,
  journaled and undone; ios: set by hand, proven from inside the app before users sign
  in), then an Appium session is switched to the app's WebView (or, for a browser
  session standing in for a WebView, the app is loaded in it) and the harness talks to
  the probes through it;
- the samplers: the app's memory and CPU and the battery, over adb (android) or through
  pymobiledevice3 (ios: lockdownd's IORegistry and the instruments' sysmontap), with the
  reader the memory checks use.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devicelab.errors import (
    BadInput,
    DeviceLabError,
    DeviceUnreachable,
    EnvironmentProblem,
    ProbeFailed,
    ToolMissing,
)
from devicelab.models import Device, NetworkProfile
from devicelab.scenarios import battery_drain
from devicelab.teardown import Teardown

if TYPE_CHECKING:
    from devicelab.harness import Harness
    from devicelab.journal import Journal
    from devicelab.netshape.proxy import ShapedProxy
    from devicelab.platforms.android_device import AndroidDevice
    from devicelab.platforms.appium import AppiumSession
    from devicelab.platforms.ios_device import IosDevice
    from devicelab.samplers import RunSampling, Sampler

__all__ = [
    "BACKEND_ALIAS",
    "GC_CAPABILITY",
    "PhoneApp",
    "attach",
    "backend_url",
    "check_appium",
    "check_phone",
    "check_route",
    "iphone_capabilities",
    "phone_proxy",
    "sampling",
    "start_app",
    "start_phone_proxy",
]

Say = Callable[[str], None]

logger = logging.getLogger(__name__)

#: XCUITest: Web Inspector's full garbage collection before every script Appium runs.
GC_CAPABILITY = "appium:safariGarbageCollect"

#: The name the app on a phone reaches the lab backend by; only the shaped proxy resolves
#: it (``.test`` is reserved: no DNS answers for it), so it is never reached around the
#: proxy.
BACKEND_ALIAS = "backend.devicelab.test"

#: Runs in the app's WebView: any HTTP answer means the request went through the proxy.
#: (Not ``{error: ...}``: a result with an ``error`` key reads as a WebDriver error.)
_ROUTE_CHECK = """async (url) => {
  try {
    const response = await fetch(url, {cache: 'no-store'});
    return {status: response.status};
  } catch (error) {
    return {failed: String(error && error.message || error)};
  }
}"""

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: How long the app's WebView context may take to appear after the session starts, unless
#: the capabilities say (appium:autoWebviewTimeout, ms, the same wait in UiAutomator2).
_WEBVIEW_TIMEOUT_S = 30.0


def check_phone(device: Device) -> None:
    """Refuse, before anything starts, a phone the run could not drive. Raises BadInput
    naming the inventory field."""
    from devicelab.platforms.appium import check_capabilities

    where = f"devices.{device.id}"
    if device.appium is None:
        raise BadInput(
            f"{where}.appium is missing: runs on {device.platform} need an Appium server and "
            "capabilities",
            hint="add appium: {url: http://127.0.0.1:4723, capabilities: {...}} (see "
            "docs/appium.md)",
        )
    if urllib.parse.urlsplit(device.appium.url).scheme not in ("http", "https"):
        raise BadInput(
            f"{where}.appium.url is not an http(s) URL", hint="e.g. http://127.0.0.1:4723"
        )
    check_capabilities(device.appium.capabilities, where=f"{where}.appium.capabilities")
    if device.platform == "ios" and device.proxy is None:
        raise BadInput(
            f"{where}.proxy is missing: an iPhone reaches the shaped proxy over Wi-Fi",
            hint="add proxy: {listen: <this machine's Wi-Fi address>:8899, allow: [<the "
            "phone's network>/24]} and set the same address as the phone's Wi-Fi proxy "
            "(docs/ios.md)",
        )


def check_appium(device: Device) -> None:
    """Before anything starts or changes: an Appium server answers at the device's
    ``appium.url``, or nothing does at a loopback URL and the run can start the local
    Appium (tools/appium) with the driver of the capabilities' automationName. Raises
    DeviceUnreachable (nothing answers at a remote URL; something that is not Appium
    answers), ToolMissing (no local Appium, or not that driver)."""
    from devicelab.platforms.appium import AppiumServer, redacted_url
    from devicelab.platforms.appium_server import installed_drivers, server_status

    endpoint = device.appium
    assert endpoint is not None  # check_phone ran at construction
    host = urllib.parse.urlsplit(endpoint.url).hostname
    found = server_status(endpoint.url)
    url = redacted_url(endpoint.url)  # as messages show it: a cloud grid's key is in it
    if found == "appium":
        return  # its drivers cannot be listed over HTTP: the session start says
    where = f"devices.{device.id}.appium.url"
    if found != "nothing":
        raise DeviceUnreachable(
            f"something that is not an Appium server answers at {url} ({found} on /status)",
            hint=f"point {where} at the Appium server, or stop what listens there",
            command="GET /status",
        )
    if host not in _LOOPBACK:
        raise DeviceUnreachable(
            f"no Appium server answers at {url}",
            hint=f"start it on that machine, or fix {where} (docs/appium.md)",
            command="GET /status",
        )
    server = AppiumServer()
    if not server.executable.exists():
        raise ToolMissing(
            f"Appium in {server.home} (nothing answers at {url}, so the run starts one)",
            hint="run ./dev/setup (or: cd tools/appium && npm ci)",
        )
    wanted = str(endpoint.capabilities.get("appium:automationName") or "")
    drivers = installed_drivers(server.home)
    if wanted and wanted.lower() not in drivers:
        package = DRIVER_PACKAGES.get(wanted.lower())
        # An iPhone was told to install the Android driver: name the one it needs.
        install = f"cd {server.home} && npm install --save-exact {package or '<its npm package>'}"
        if wanted.lower() == "xcuitest":
            install += " on a Mac (XCUITest runs on macOS only; or set appium.url to a Mac's)"
        raise ToolMissing(
            f"the Appium driver for automationName {wanted} in {server.home} (installed: "
            f"{', '.join(sorted(drivers)) or 'none'})",
            hint=f"{install} (docs/appium.md)",
        )


#: automationName (lower case) -> the npm package of its Appium driver.
DRIVER_PACKAGES = {
    "uiautomator2": "appium-uiautomator2-driver",
    "xcuitest": "appium-xcuitest-driver",
    "espresso": "appium-espresso-driver",
    "chromium": "appium-chromium-driver",
    "fake": "@appium/fake-driver",
}


def attach(device: Device, say: Say) -> AndroidDevice | IosDevice:
    """The inventory's phone, online and read (nothing on it changed yet). Raises
    DeviceUnreachable with what to do for its state; ToolMissing without the ios extra."""
    from devicelab.journal import Journal
    from devicelab.platforms import appium

    if device.platform == "ios":
        from devicelab.platforms.ios_device import IosDevice

        say(f"attaching {device.id} ({device.udid}) through usbmuxd")
        # What a run that died left: a hub port battery_drain switched off goes back on,
        # an Appium session it left open is ended.
        journal = Journal(undoers={**battery_drain.UNDOERS, **appium.UNDOERS})
        return IosDevice(device, journal=journal).create()
    from devicelab.platforms.android_device import AndroidDevice
    from devicelab.samplers.android import UNDOERS

    say(f"attaching {device.id} ({device.serial}) through adb")
    # The battery simulation's undoer too: a `dumpsys battery unplug` that a crashed
    # run left pending is reset when the phone attaches (the run itself never unplugs).
    # So is a hub port that battery_drain switched off (uhubctl): it is switched on.
    # And an Appium session it left open is ended.
    undoers = {**UNDOERS, **battery_drain.UNDOERS, **appium.UNDOERS}
    return AndroidDevice(device, Journal(undoers=undoers)).create()


def phone_proxy(device: Device, profile: NetworkProfile) -> ShapedProxy:
    """The shaped proxy of a phone run (not started; a subprocess, so the run's own work
    never delays the link): the backend alias; for an iPhone, listening where the
    inventory says, for the networks it allows and this machine's loopback (the
    self-check)."""
    from devicelab.netshape.addon import DEFAULT_ALLOW
    from devicelab.netshape.proxy import ShapedProxy

    aliases = {BACKEND_ALIAS: "127.0.0.1"}
    if device.proxy is None:
        return ShapedProxy(profile, mode="subprocess", aliases=aliases)
    return ShapedProxy(
        profile,
        mode="subprocess",
        aliases=aliases,
        host=device.proxy.host,
        port=device.proxy.port,
        allow=[*device.proxy.allow, *DEFAULT_ALLOW],
    )


def start_phone_proxy(device: Device, profile: NetworkProfile) -> ShapedProxy:
    """The phone run's shaped proxy (``phone_proxy``), started. Raises EnvironmentProblem
    when it cannot start, BadInput when the inventory's listen address is none of this
    machine's; for an iPhone that cannot listen on the inventory's address, the
    hint names the fixed port to free or change: the phone's Wi-Fi proxy setting names that
    port, so a port the system picks (0) would be one the phone never reaches."""
    proxy = phone_proxy(device, profile)
    try:
        return proxy.start()
    except (EnvironmentProblem, BadInput) as exc:
        if device.proxy is None or "cannot listen on" not in exc.message:
            raise
        where = f"devices.{device.id}.proxy.listen in the inventory"
        iphone = "and the iPhone's Wi-Fi proxy (Configure Proxy > Manual) to the same"
        if isinstance(exc, BadInput):  # no address of this machine: the inventory's typo
            raise BadInput(
                exc.message,
                hint=f"set {where} to this machine's address on the phone's network, {iphone}",
            ) from exc
        raise EnvironmentProblem(
            exc.message,
            hint=f"stop what listens on {device.proxy.listen}, or set {where} to this "
            f"machine's address on the phone's network and another fixed free port, {iphone}",
        ) from exc


def backend_url(server_url: str) -> str:
    """The lab backend's URL as the app on a phone reaches it: under the alias only the
    shaped proxy resolves, on the server's port."""
    port = urllib.parse.urlsplit(server_url).port
    return f"http://{BACKEND_ALIAS}:{port}"


def start_app(
    *,
    device: Device,
    phone: AndroidDevice | IosDevice,
    teardown: Teardown,
    proxy: ShapedProxy,
    app_url: str,
    backend: str,
    out_dir: Path,
    timeout_s: float,
    say: Say,
) -> tuple[Harness, PhoneApp]:
    """Start the local Appium when one is needed, route the phone, start the Appium session
    in the app's WebView, prove the route from inside the app; returns the harness and
    the app (to send it to the background).
    Each step's undo is pushed on ``teardown`` before the next starts. Raises
    DeviceUnreachable, EnvironmentProblem."""
    from devicelab.harness import Harness
    from devicelab.platforms.android_device import AndroidDevice
    from devicelab.platforms.appium import AppiumSession, own_ports, proxied_capabilities

    endpoint = device.appium
    assert endpoint is not None  # check_phone ran at construction
    capabilities = dict(endpoint.capabilities)
    # Appium first: a server that cannot start never costs the phone a route.
    url = _appium_url(teardown, endpoint.url, out_dir, say)
    if isinstance(phone, AndroidDevice):
        phone.route(proxy.port)  # its undo is on the teardown since it attached
        say(f"routed {device.serial} through the proxy on port {proxy.port}")
        # A browser session standing in for the WebView gets the route as launch flags.
        capabilities = proxied_capabilities(capabilities, proxy.url)
    else:
        say(f"{device.id} must use the Wi-Fi proxy {proxy.host}:{proxy.port} (docs/ios.md)")
        capabilities = iphone_capabilities(capabilities)
    # Each driver's host ports (chromedriver's 9515, WebDriverAgent's 8100, ...) of its
    # own: two sessions at once (a battery farm) would take each other's.
    session = AppiumSession(url, own_ports(capabilities))
    say(f"starting an Appium session on {session.info()['url']}")
    _start_session(teardown, session, phone.journal, device.serial or device.udid or device.id)
    if session.is_browser:  # a browser stands in for the WebView: load the app in it
        session.open(app_url)
    else:
        app_id = device.app.id if device.app else None
        waited = endpoint.capabilities.get("appium:autoWebviewTimeout")  # ms, Appium's
        webview_s = float(waited) / 1000 if waited else _WEBVIEW_TIMEOUT_S
        try:
            name = session.switch_to_webview(app_id, timeout_s=webview_s)
        except ProbeFailed as exc:
            if isinstance(phone, AndroidDevice):
                raise
            raise _why_no_webview(device, app_id, exc) from exc
        say(f"in the app's WebView ({name})")
    harness = Harness(session.evaluate, timeout_s=timeout_s)
    harness.wait_ready()
    if isinstance(phone, AndroidDevice):
        hint = (
            f"check `adb -s {device.serial} reverse --list` (tcp:{proxy.port}) and "
            "`adb shell settings get global http_proxy`"
        )
    else:
        hint = (
            f"on the iPhone: Settings > Wi-Fi > (i) > Configure Proxy > Manual, server "
            f"{proxy.host}, port {proxy.port}; the phone must be on a network the proxy "
            f"allows ({', '.join(device.proxy.allow) if device.proxy else 'loopback'})"
        )
    check_route(session.evaluate, f"{backend}/rest/v1/", hint)
    say(f"the app reaches the backend through the shaped proxy ({backend})")
    return harness, PhoneApp(session, device.app.id if device.app else None)


def _start_session(
    teardown: Teardown, session: AppiumSession, journal: Journal | None, target: str
) -> None:
    """Create ``session``, journaled as a change to ``target`` from before Appium starts
    it (a run killed outright leaves it open on the lab's Appium server for 10 minutes,
    the phone busy; the next run on the phone ends it), its end pushed on ``teardown``.
    Raises DeviceUnreachable, BadInput (see AppiumSession.create)."""
    if journal is None:
        session.create()
        teardown.push("appium session", session.close)
        return
    try:
        session.create(journal, target)
    except BaseException:
        if (pending := session.pending) is not None:
            # Appium may be starting it still (a Ctrl-C that did not wait, no answer): the
            # teardown ends what carries its claim by then; the next run looks again.
            teardown.push("appium session", lambda: journal.undo([pending]))
        raise
    entry = session.entry
    assert entry is not None  # create journals the session it started

    def end_session() -> None:
        session.close()
        journal.mark_undone(entry)

    teardown.push("appium session", end_session)


def iphone_capabilities(capabilities: dict[str, Any]) -> dict[str, Any]:
    """An iPhone app session's capabilities with Appium's garbage collection before every
    script (:data:`GC_CAPABILITY`) unless the inventory sets it; a browser standing in for
    the WebView is left as it is.

    Why: the app's JS heap cannot be read on iOS while Appium holds the page's one Web
    Inspector connection, so the memory checks read the app's footprint, and Appium's
    Heap.gc before each script call keeps uncollected garbage out of it.
    """
    if capabilities.get("browserName"):
        return capabilities
    return {GC_CAPABILITY: True, **capabilities}


def _why_no_webview(device: Device, app_id: str | None, failed: ProbeFailed) -> ProbeFailed:
    """Appium saw no WebView in the iPhone app: webinspectord's reason, or Appium's error
    with why webinspectord could not be asked."""
    from devicelab.platforms.ios_webinspector import diagnose_webview

    try:
        found = diagnose_webview(device.udid or "", app_id)
    except DeviceLabError as exc:
        logger.info("webinspectord could not be asked about the WebView: %s", exc.one_line())
        return failed
    return ProbeFailed(
        f"{failed.message} - webinspectord: {found.cause}",
        hint=found.hint,
        command=failed.command,
    )


class PhoneApp:
    """The app of a phone's Appium session, sent to the background and brought back
    (the ScenarioContext's ``app_state``)."""

    def __init__(self, session: AppiumSession, app_id: str | None) -> None:
        self.session = session
        self.app_id = app_id

    def to_background(self) -> None:
        """Send the app to the background and keep it there. Raises ProbeFailed."""
        self.session.to_background()

    def to_foreground(self) -> None:
        """Bring the app back in front. Raises ProbeFailed."""
        self.session.to_foreground(self.app_id)


def check_route(evaluate: Callable[[str, Any], Any], url: str, hint: str) -> None:
    """Prove from inside the app that the phone goes through the shaped proxy: fetch
    ``url`` (the backend under :data:`BACKEND_ALIAS`). Raises EnvironmentProblem with
    ``hint`` when the request does not get through."""
    answer = evaluate(_ROUTE_CHECK, url)
    if isinstance(answer, dict) and isinstance(answer.get("status"), int):
        return
    why = answer.get("failed") if isinstance(answer, dict) else repr(answer)
    raise EnvironmentProblem(
        f"the app cannot reach the lab backend through the shaped proxy ({why})", hint=hint
    )


def _appium_url(teardown: Teardown, url: str, out_dir: Path, say: Say) -> str:
    """``url`` when an Appium server answers there; for a loopback URL with nothing
    behind it, this run's own local Appium 3 (tools/appium) on a free port, logging to
    ``<out>/appium.log`` and stopped by ``teardown``.

    Its own, not one on ``url``'s port: the runs of a farm (or two `devicelab run`s) whose
    inventory names the same URL each started one there; the second's could not listen,
    both used the first's, and the first run's end stopped it under the others (their
    phones' next scripts failed)."""
    from devicelab.platforms.appium import AppiumServer, redacted_url
    from devicelab.platforms.web import answers

    parts = urllib.parse.urlsplit(url)
    if answers(url.rstrip("/") + "/status") or parts.hostname not in _LOOPBACK:
        return url
    out_dir.mkdir(parents=True, exist_ok=True)
    server = AppiumServer(
        host=parts.hostname or "127.0.0.1", port=0, log_file=out_dir / "appium.log"
    )
    say(
        f"no Appium server answers at {redacted_url(url)}: starting this run's own "
        f"(log: {server.log_file})"
    )
    server.start()
    teardown.push("appium server", server.stop)
    say(f"Appium for this run at {server.url}")
    return server.url


def sampling(
    device: Device,
    phone: AndroidDevice | IosDevice,
    app_state: PhoneApp,
    out_dir: Path,
    started: datetime,
) -> tuple[RunSampling | None, Callable[[], float] | None, Sampler | None]:
    """The run's samplers of ``phone``, started: (the sampling, the memory checks' reader,
    the battery sampler); (None, None, None) when the device names no app (android: the
    package is what is sampled). The android reader is the WebView's JS heap through the
    app's Appium session (``app_state``), with the app's PSS beside it; the iPhone's the
    app's footprint through sysmontap. Raises BadInput when ``out_dir`` cannot be
    written."""
    from devicelab.samplers import android_run_sampling, ios_run_sampling

    app = device.app
    if device.platform == "android":
        from devicelab.platforms.android_device import AndroidDevice
        from devicelab.samplers.android import AndroidSampler, AppPss
        from devicelab.samplers.webview import WebViewHeap

        if app is None or not isinstance(phone, AndroidDevice):
            return None, None, None
        run = android_run_sampling(phone.adb, app.id, out_dir, started)
        android = run.samplers[0]
        assert isinstance(android, AndroidSampler)
        return run, WebViewHeap(app_state.session.cdp, pss=AppPss(android)), android
    from devicelab.samplers.ios import AppFootprint, IosSampler
    from devicelab.samplers.ios_sysmon import DEFAULT_PROCESS

    if not device.udid:
        return None, None, None
    # Without an app only the battery is sampled.
    process = None if app is None else app.process or DEFAULT_PROCESS
    run = ios_run_sampling(device.udid, out_dir, started, process)
    ios = run.samplers[0]
    assert isinstance(ios, IosSampler)
    return run, AppFootprint(ios) if process is not None else None, ios
