"""Appium: a session on a phone (or a stand-in), and a local Appium 3 server.

:class:`AppiumSession` is one W3C WebDriver session on an Appium server. Lifecycle::

    create()            POST /session with the inventory's capabilities merged with ours
    contexts()          NATIVE_APP, WEBVIEW_<package>, ... (Appium's context API)
    switch_to_webview() wait until the app's WebView context appears, then switch to it
    open(url)           load a page (browser sessions: the chromium driver stand-in)
    evaluate()          run ``async (arg) => ...`` in the page: the channel devicelab.harness
                        talks over (the same shape as Playwright's page.evaluate)
    to_background()     the app to the background, kept there (``mobile: backgroundApp``;
                        a browser session: a new tab in front of the app's, which hides it)
    to_foreground()     the app back in front (``mobile: activateApp``), commands back to
                        its page
    info()              where the session runs, for logs and results (no secrets)
    close()             DELETE /session (idempotent, never raises)

A session whose capabilities name a ``browserName`` drives a browser, not an app: the
chromium driver running the desktop Chromium stands in for an Android WebView in tests
(the same chromedriver protocol Appium uses for a WebView). Such a browser does not see
the phone's http_proxy, so :func:`proxied_capabilities` gives it the proxy as flags.

:class:`AppiumServer` (devicelab.platforms.appium_server, re-exported here) starts a
local Appium 3 from this checkout's ``tools/appium``.

Selenium's and the Appium client's exceptions are translated into devicelab's in one
place, devicelab.platforms.appium_errors, around every call made here: a server that does
not answer or a session that does not start is DeviceUnreachable; capabilities Appium
refuses as invalid are BadInput; a missing context, a script that throws or times out is
ProbeFailed. A session a Ctrl-C or a dead run would leave open is ended by
devicelab.platforms.appium_orphans.
"""

from __future__ import annotations

import copy
import logging
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any, Self

from devicelab.errors import BadInput, ProbeFailed
from devicelab.journal import Entry, Journal
from devicelab.platforms.appium_errors import (
    NEW_SESSION,
    THREW_HINT,
    WEBVIEW_HINT,
    message,
    redacted_url,
    translated,
)
from devicelab.platforms.appium_orphans import (
    CLAIM_CAPABILITY,
    PENDING_KIND,
    SESSION_KIND,
    UNDOERS,
    Starting,
)
from devicelab.platforms.appium_server import AppiumServer, appium_home

__all__ = [
    "NATIVE_CONTEXT",
    "PENDING_KIND",
    "SESSION_KIND",
    "UNDOERS",
    "WEBVIEW_HINT",
    "AppiumServer",
    "AppiumSession",
    "appium_home",
    "check_capabilities",
    "own_ports",
    "proxied_capabilities",
    "redacted_url",
]

logger = logging.getLogger("devicelab.platforms.appium")

#: Appium's name of the app's native UI context.
NATIVE_CONTEXT = "NATIVE_APP"
#: Appium names a debuggable WebView ``WEBVIEW_<package>`` (Android) or ``WEBVIEW_<n>``.
WEBVIEW_PREFIX = "WEBVIEW_"
#: The capabilities W3C defines without a vendor prefix; every other one needs one
#: (``appium:``, ``goog:``...), or Appium refuses the session.
W3C_CAPABILITIES = frozenset(
    {
        "acceptInsecureCerts",
        "browserName",
        "browserVersion",
        "pageLoadStrategy",
        "platformName",
        "proxy",
        "setWindowRect",
        "strictFileInteractability",
        "timeouts",
        "unhandledPromptBehavior",
        "userAgent",
        "webSocketUrl",
    }
)
# Our defaults; the inventory's capabilities win over them.
_OUR_CAPABILITIES: dict[str, Any] = {"appium:newCommandTimeout": 600}
# One probe call may take minutes (a 10 MB upload on 3G); the HTTP client must outwait it.
_HTTP_TIMEOUT_S = 900
_SCRIPT_TIMEOUT_S = 800

# execute_async_script's last argument is the callback; the function is awaited and its
# rejection comes back as data, so a probe's error message survives the WebDriver hop.
_ASYNC_WRAPPER = """const done = arguments[arguments.length - 1];
const fn = (%s);
Promise.resolve().then(() => fn(arguments[0])).then(
  (value) => done({ok: true, value: value === undefined ? null : value}),
  (error) => done({ok: false, error: String((error && error.message) || error)}));"""


def check_capabilities(capabilities: Mapping[str, Any], where: str = "capabilities") -> None:
    """Refuse capabilities Appium would refuse: no platformName, or a non-W3C name
    without a vendor prefix. Raises BadInput naming the capability and its fix."""
    if not capabilities.get("platformName"):
        raise BadInput(
            f"{where} has no platformName",
            hint="add platformName: Android (or iOS) to the device's appium capabilities",
        )
    for name in capabilities:
        if ":" not in name and name not in W3C_CAPABILITIES:
            raise BadInput(
                f"{where}.{name} is not a W3C capability",
                hint=f"write it with Appium's vendor prefix: appium:{name}",
            )


def proxied_capabilities(capabilities: Mapping[str, Any], proxy_url: str) -> dict[str, Any]:
    """``capabilities`` with a browser session sent through ``proxy_url``.

    Only a session with a ``browserName`` changes: its goog:chromeOptions gain
    ``--proxy-server`` and ``--proxy-bypass-list=<-loopback>`` (Chromium otherwise never
    proxies loopback, where the app and the backend live). An app session is routed by
    the phone's own http_proxy (devicelab.platforms.routing) and is returned as is.
    """
    merged = copy.deepcopy(dict(capabilities))
    if not merged.get("browserName"):
        return merged
    options = merged.setdefault("goog:chromeOptions", {})
    args = [
        a for a in options.get("args", []) if not a.startswith(("--proxy-server", "--proxy-bypass"))
    ]
    options["args"] = [*args, f"--proxy-server={proxy_url}", "--proxy-bypass-list=<-loopback>"]
    return merged


#: The host ports each Appium driver takes per session, by ``appium:automationName``
#: (lower case; "" for a browser session): two sessions on one machine (a farm's phones,
#: each with its own Appium) take the same defaults (UiAutomator2's server 8200 and its
#: chromedriver 9515, WebDriverAgent's 8100, the WebKit proxy's 27753) and the second
#: session fails or talks to the first phone.
_SESSION_PORTS = {
    "": ("appium:chromedriverPort",),
    "uiautomator2": ("appium:systemPort", "appium:chromedriverPort"),
    "xcuitest": ("appium:wdaLocalPort", "appium:webkitDebugProxyPort"),
}


def own_ports(capabilities: Mapping[str, Any]) -> dict[str, Any]:
    """``capabilities`` with a free port of this machine for each per-session port of its
    driver (:data:`_SESSION_PORTS`) that it does not set itself."""
    from devicelab.ports import free_port

    merged = dict(capabilities)
    driver = "" if merged.get("browserName") else str(merged.get("appium:automationName", ""))
    for name in _SESSION_PORTS.get(driver.lower(), ()):
        merged.setdefault(name, free_port())
    return merged


#: The client's name of Appium's DevTools passthrough command.
_CDP_COMMAND = "executeCdpCommand"


class AppiumSession:
    """One session on the Appium server at ``url`` (see the module docstring).

    ``capabilities`` are the inventory's W3C capabilities; ``ours`` are merged under them
    (the inventory wins), e.g. a browser's proxy flags.
    """

    NATIVE_CONTEXT = NATIVE_CONTEXT
    WEBVIEW_PREFIX = WEBVIEW_PREFIX

    def __init__(
        self,
        url: str,
        capabilities: Mapping[str, Any],
        *,
        http_timeout_s: float = _HTTP_TIMEOUT_S,
        script_timeout_s: float = _SCRIPT_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.capabilities: dict[str, Any] = {**_OUR_CAPABILITIES, **capabilities}
        self.http_timeout_s = http_timeout_s
        self.script_timeout_s = script_timeout_s
        self.session_id = ""
        self._driver: Any = None
        self._script_timeout_set = False
        self._app_window = ""  # browser session: the app's tab while another is in front
        self._app_context = ""  # app session: the WebView to come back to
        #: The journal entry of this session while Appium starts it (``create`` with a
        #: journal), None once it started, or was ended or never started.
        self.pending: Entry | None = None
        #: The journal entry of the running session (``create`` with a journal).
        self.entry: Entry | None = None

    @property
    def is_browser(self) -> bool:
        """Whether this session drives a browser (``browserName``), not an app."""
        return bool(self.capabilities.get("browserName"))

    def create(self, journal: Journal | None = None, target: str = "") -> Self:
        """Start the session. With a ``journal``, it is journaled as a change to device
        ``target`` from before POST /session on: first as ``pending`` (a claim token, also
        sent as the capability CLAIM_CAPABILITY, that finds it while it has no id yet),
        then as ``entry`` (its id) once started. Raises DeviceUnreachable (no server, the
        session did not start), BadInput (capabilities refused as invalid),
        EnvironmentProblem (the journal cannot be written)."""
        from appium import webdriver
        from appium.options.common.base import AppiumOptions
        from appium.webdriver.client_config import AppiumClientConfig
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.proxy import Proxy, ProxyType

        check_capabilities(self.capabilities)
        capabilities = copy.deepcopy(self.capabilities)
        if journal is not None:
            claim = uuid.uuid4().hex
            capabilities[CLAIM_CAPABILITY] = claim
            what = f"Appium session starting on {redacted_url(self.url)} (claim {claim})"
            data = {"url": self.url, "claim": claim, "what": what}
            self.pending = journal.record(PENDING_KIND, target, data)
        options = AppiumOptions().load_capabilities(capabilities)
        host = urllib.parse.urlsplit(self.url).hostname or ""
        direct = host in ("127.0.0.1", "localhost", "::1")
        config = AppiumClientConfig(
            self.url,
            timeout=int(self.http_timeout_s),
            # A loopback server is reached directly, whatever HTTP_PROXY the shell has.
            proxy=Proxy({"proxyType": ProxyType.DIRECT}) if direct else None,
        )
        starting = Starting(
            lambda: webdriver.Remote(self.url, options=options, client_config=config)
        )
        try:
            starting.wait()
        except KeyboardInterrupt:
            if starting.end_when_started(redacted_url(self.url)):
                self._settle(journal)
            raise  # else the pending entry stays: the teardown, or the next run, ends it
        try:
            with translated(NEW_SESSION, self.url):
                self._driver = starting.result()
                self.session_id = str(self._driver.session_id)
        except BaseException as exc:
            if isinstance(exc.__cause__, WebDriverException):
                self._settle(journal)  # Appium answered: it started no session
            raise
        logger.info("appium session %s on %s", self.session_id, redacted_url(self.url))
        if journal is not None:
            try:  # the session's entry first: a kill between the two leaves both
                self.entry = self.journaled(journal, target)
                self._settle(journal)
            except BaseException:
                self.close()
                raise
        return self

    def _settle(self, journal: Journal | None) -> None:
        """Mark the pending entry undone: the session started (and has its own entry), or
        none is left starting."""
        pending, self.pending = self.pending, None
        if journal is not None and pending is not None:
            journal.mark_undone(pending)

    def _require(self) -> Any:
        if self._driver is None:
            raise ProbeFailed("the Appium session is not running", hint="call create() first")
        return self._driver

    def contexts(self) -> list[str]:
        """The session's contexts (NATIVE_APP, WEBVIEW_...). Raises ProbeFailed."""
        driver = self._require()
        with translated("get contexts", self.url):
            return [str(c) for c in driver.contexts]

    def current_context(self) -> str:
        """The context commands go to now. Raises ProbeFailed."""
        driver = self._require()
        with translated("get context", self.url):
            return str(driver.current_context)

    def switch_to(self, context: str) -> None:
        """Send the next commands to ``context``. Raises ProbeFailed when it does not exist."""
        driver = self._require()
        with translated(f"switch to {context}", self.url):
            driver.switch_to.context(context)

    def switch_to_native(self) -> None:
        """Back to the app's native UI (NATIVE_APP). Raises ProbeFailed."""
        self.switch_to(NATIVE_CONTEXT)

    def wait_for_webview(self, package: str | None, timeout_s: float = 30.0) -> str:
        """The name of the app's WebView context once it appears: ``WEBVIEW_<package>``,
        or (``package`` None) the first ``WEBVIEW_*``.

        Raises ProbeFailed, with the contexts seen and the hint to enable WebView
        debugging, when none appears within ``timeout_s``.
        """
        wanted = f"{WEBVIEW_PREFIX}{package}" if package else None
        deadline = time.monotonic() + timeout_s
        seen: list[str] = []
        while True:
            seen = self.contexts()
            for name in seen:
                if name == wanted or (wanted is None and name.startswith(WEBVIEW_PREFIX)):
                    return name
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        raise ProbeFailed(
            f"no {wanted or WEBVIEW_PREFIX + '*'} context appeared within {timeout_s:g} s "
            f"(contexts: {', '.join(seen) or 'none'})",
            hint=WEBVIEW_HINT,
            command="get contexts",
        )

    def switch_to_webview(self, package: str | None, timeout_s: float = 30.0) -> str:
        """Wait for the app's WebView context and switch to it; returns its name.
        Raises ProbeFailed (see :meth:`wait_for_webview`)."""
        name = self.wait_for_webview(package, timeout_s)
        self.switch_to(name)
        return name

    def open(self, url: str) -> None:
        """Load ``url`` in the browser (or WebView) and wait for it. Raises ProbeFailed."""
        driver = self._require()
        with translated(f"load {url}", self.url):
            driver.get(url)

    def evaluate(self, source: str, arg: Any = None) -> Any:
        """Run the JS function ``source`` (``async (arg) => ...``) with the JSON ``arg``
        in the current web context; returns its awaited JSON result.

        Raises ProbeFailed when the function throws or rejects, or the script times out.
        """
        driver = self._require()
        with translated("execute_async_script", self.url):
            if not self._script_timeout_set:  # set on first use: native-only drivers lack it
                driver.set_script_timeout(self.script_timeout_s)
                self._script_timeout_set = True
            answer = driver.execute_async_script(_ASYNC_WRAPPER % source, arg)
        if not isinstance(answer, dict) or "ok" not in answer:
            # The wrapper always answers {ok, ...}: the context it ran in is no app page.
            raise ProbeFailed(
                f"the page's script answered {answer!r}, not {{ok, value}}",
                hint="switch to the app's WebView context (switch_to_webview), then run again",
            )
        if not answer["ok"]:
            raise ProbeFailed(f"the page's script failed: {answer.get('error')}", hint=THREW_HINT)
        return answer.get("value")

    def cdp(self, command: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run the DevTools command ``command`` in the current web context through
        Appium's DevTools passthrough to chromedriver (``/goog/cdp/execute``: an Android
        WebView, or a Chromium stand-in); returns its result.

        Raises ProbeFailed when the context has no DevTools behind it (a native context,
        an iOS WKWebView) or the command fails.
        """
        driver = self._require()
        driver.command_executor.add_command(
            _CDP_COMMAND, "POST", "/session/$sessionId/goog/cdp/execute"
        )
        with translated(f"DevTools {command}", self.url):
            answer = driver.execute(_CDP_COMMAND, {"cmd": command, "params": dict(params or {})})
        value = answer.get("value") if isinstance(answer, dict) else None
        return dict(value) if isinstance(value, dict) else {}

    def to_background(self) -> None:
        """Send the app to the background and keep it there: ``mobile: backgroundApp``
        (seconds -1) from the native context; a browser session opens a new tab in front
        of the app's, which hides its page (``visibilitychange``). Raises ProbeFailed."""
        driver = self._require()
        if self.is_browser:
            with translated("open a tab in front of the app", self.url):
                self._app_window = str(driver.current_window_handle)
                driver.switch_to.new_window("tab")
            return
        self._app_context = self.current_context()
        self.switch_to_native()
        with translated("mobile: backgroundApp", self.url):
            driver.execute_script("mobile: backgroundApp", {"seconds": -1})

    def to_foreground(self, app_id: str | None) -> None:
        """Bring the app ``app_id`` (package or bundle id) back in front and commands back
        to its page (``mobile: activateApp``; a browser session closes the tab in front).
        Raises ProbeFailed."""
        driver = self._require()
        if self.is_browser:
            with translated("close the tab in front of the app", self.url):
                if self._app_window and driver.current_window_handle != self._app_window:
                    driver.close()
                if self._app_window:
                    driver.switch_to.window(self._app_window)
            return
        ios = str(self.capabilities.get("platformName", "")).lower() == "ios"
        with translated("mobile: activateApp", self.url):
            driver.execute_script("mobile: activateApp", {"bundleId" if ios else "appId": app_id})
        if self._app_context:
            self.switch_to(self._app_context)

    def info(self) -> dict[str, str]:
        """The server (credentials redacted), the session id and what it drives."""
        found = {"url": redacted_url(self.url), "session": self.session_id}
        for name in ("platformName", "appium:automationName", "browserName"):
            if value := self.capabilities.get(name):
                found[name.removeprefix("appium:")] = str(value)
        return found

    def close(self) -> None:
        """End the session; logs what fails and never raises."""
        driver, self._driver = self._driver, None
        if driver is None:
            return
        try:
            driver.quit()
        except Exception as exc:  # teardown goes on whatever happened
            logger.warning("ending the appium session failed: %s", message(exc))

    def journaled(self, journal: Journal, target: str) -> Entry:
        """Record the running session in ``journal`` as a change to device ``target``
        (``create(journal, target)`` does, replacing its pending entry): a
        run killed outright (kill -9, a crash) leaves it open on the server for
        newCommandTimeout (10 min), the phone busy, and the next run on that phone ends
        it (``UNDOERS``). Returns the entry, to mark undone once ``close()`` ran. Raises
        EnvironmentProblem when the journal cannot be written."""
        what = f"Appium session {self.session_id} on {redacted_url(self.url)}"
        data = {"url": self.url, "session": self.session_id, "what": what}
        return journal.record(SESSION_KIND, target, data)

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()
