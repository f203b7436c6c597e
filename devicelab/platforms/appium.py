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

Selenium's and the Appium client's exceptions are translated here, and only here, into
devicelab's (``raise ... from``): a server that does not answer or a session that does not
start is DeviceUnreachable; capabilities Appium refuses as invalid are BadInput; a missing
context, a script that throws or times out is ProbeFailed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

from devicelab.errors import BadInput, DeviceUnreachable, ProbeFailed
from devicelab.journal import Entry, Journal
from devicelab.platforms.appium_server import AppiumServer, appium_home

__all__ = [
    "NATIVE_CONTEXT",
    "SESSION_KIND",
    "UNDOERS",
    "WEBVIEW_HINT",
    "AppiumServer",
    "AppiumSession",
    "appium_home",
    "check_capabilities",
    "proxied_capabilities",
    "redacted_url",
]

logger = logging.getLogger("devicelab.platforms.appium")

#: The journal's kind of an Appium session a run started (its undo: DELETE /session/ID).
SESSION_KIND = "appium.session"

#: Appium's name of the app's native UI context.
NATIVE_CONTEXT = "NATIVE_APP"
#: Appium names a debuggable WebView ``WEBVIEW_<package>`` (Android) or ``WEBVIEW_<n>``.
WEBVIEW_PREFIX = "WEBVIEW_"
WEBVIEW_HINT = (
    "enable WebView debugging in the app: Capacitor android.webContentsDebuggingEnabled "
    "(ios.webContentsDebuggingEnabled on iOS 16.4+) in capacitor.config, then rebuild it"
)
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
_NEW_SESSION = "new session"

# A page in the background, or behind a locked screen, runs no script until it is in front.
_PAUSED_HINT = "keep the device unlocked with the app in front, then run again"
_THREW_HINT = "the page threw it: restart the app (capacitor-harness/app's test build), run again"

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


def redacted_url(url: str) -> str:
    """``url`` with its user:password replaced by ``***`` (cloud Appium URLs carry keys
    there): what messages and ``info()`` may show. Returns ``url`` unchanged without."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        netloc = f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def _message(exc: BaseException) -> str:
    """The first line of a WebDriver error (selenium appends stack traces)."""
    text = str(getattr(exc, "msg", None) or exc).strip().removeprefix("Message: ")
    text = text.split("; For documentation on this error")[0]
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _translated(what: str, url: str) -> Iterator[None]:
    """Selenium/urllib3 errors of ``what`` -> devicelab errors (the one place they map)."""
    from appium.common.exceptions import NoSuchContextException
    from selenium.common.exceptions import (
        InvalidArgumentException,
        JavascriptException,
        SessionNotCreatedException,
        TimeoutException,
        WebDriverException,
    )
    from urllib3.exceptions import HTTPError as Urllib3Error

    try:
        yield
    except (Urllib3Error, ConnectionError) as exc:
        raise DeviceUnreachable(
            f"no Appium server answers at {redacted_url(url)} ({what}): {_message(exc)}",
            hint="start one (docs/appium.md: tools/appium/node_modules/.bin/appium) or fix "
            "the device's appium.url in the inventory",
            command=what,
        ) from exc
    except InvalidArgumentException as exc:
        raise BadInput(
            f"Appium refused the capabilities ({what}): {_message(exc)}",
            hint="fix the device's appium.capabilities in the inventory",
        ) from exc
    except SessionNotCreatedException as exc:
        raise _not_started(exc, what, url) from exc
    except NoSuchContextException as exc:
        raise ProbeFailed(
            f"no such Appium context ({what}): {_message(exc)}", hint=WEBVIEW_HINT
        ) from exc
    except (JavascriptException, TimeoutException) as exc:
        hint = _PAUSED_HINT if isinstance(exc, TimeoutException) else _THREW_HINT
        raise ProbeFailed(
            f"the page's script failed ({what}): {_message(exc)}", hint=hint, command=what
        ) from exc
    except WebDriverException as exc:
        if what == _NEW_SESSION:  # Appium answers a driver it cannot find with a 500
            raise _not_started(exc, what, url) from exc
        raise ProbeFailed(
            f"Appium {what} failed: {_message(exc)}",
            hint="the Appium server's log says why; check that the device is still connected "
            "and unlocked (`devicelab devices`), then run again",
            command=what,
        ) from exc


def _not_started(exc: BaseException, what: str, url: str) -> DeviceUnreachable:
    # A run killed while Appium was creating its session never learnt the session's id,
    # so nothing ends it: it holds the phone (or a stand-in's browser profile: "Chrome
    # instance exited") until newCommandTimeout. Named here, it costs minutes, not 600 s.
    where = redacted_url(url).rstrip("/")
    return DeviceUnreachable(
        f"the Appium session did not start: {_message(exc)}",
        hint="check the device, the capabilities and the driver (appium driver list "
        "--installed); the server's log says more. A session a run killed while it started "
        "left holds the phone (a stand-in's browser profile: 'Chrome instance exited') "
        "until newCommandTimeout: its ID is in the server's log ('session ID added to "
        f"master session list'; <out>/appium.log for a local one), `curl -X DELETE {where}"
        "/session/ID` ends it; then stop a stand-in Chromium still running with that "
        "--user-data-dir (docs/appium.md)",
        command=what,
    )


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

    @property
    def is_browser(self) -> bool:
        """Whether this session drives a browser (``browserName``), not an app."""
        return bool(self.capabilities.get("browserName"))

    def create(self) -> Self:
        """Start the session. Raises DeviceUnreachable (no server, the session did not
        start), BadInput (capabilities refused as invalid)."""
        from appium import webdriver
        from appium.options.common.base import AppiumOptions
        from appium.webdriver.client_config import AppiumClientConfig
        from selenium.webdriver.common.proxy import Proxy, ProxyType

        check_capabilities(self.capabilities)
        options = AppiumOptions().load_capabilities(copy.deepcopy(self.capabilities))
        host = urllib.parse.urlsplit(self.url).hostname or ""
        direct = host in ("127.0.0.1", "localhost", "::1")
        config = AppiumClientConfig(
            self.url,
            timeout=int(self.http_timeout_s),
            # A loopback server is reached directly, whatever HTTP_PROXY the shell has.
            proxy=Proxy({"proxyType": ProxyType.DIRECT}) if direct else None,
        )
        starting = _Starting(
            lambda: webdriver.Remote(self.url, options=options, client_config=config)
        )
        try:
            starting.wait()
        except KeyboardInterrupt:
            starting.end_when_started(redacted_url(self.url))
            raise
        with _translated(_NEW_SESSION, self.url):
            self._driver = starting.result()
            self.session_id = str(self._driver.session_id)
        logger.info("appium session %s on %s", self.session_id, redacted_url(self.url))
        return self

    def _require(self) -> Any:
        if self._driver is None:
            raise ProbeFailed("the Appium session is not running", hint="call create() first")
        return self._driver

    def contexts(self) -> list[str]:
        """The session's contexts (NATIVE_APP, WEBVIEW_...). Raises ProbeFailed."""
        driver = self._require()
        with _translated("get contexts", self.url):
            return [str(c) for c in driver.contexts]

    def current_context(self) -> str:
        """The context commands go to now. Raises ProbeFailed."""
        driver = self._require()
        with _translated("get context", self.url):
            return str(driver.current_context)

    def switch_to(self, context: str) -> None:
        """Send the next commands to ``context``. Raises ProbeFailed when it does not exist."""
        driver = self._require()
        with _translated(f"switch to {context}", self.url):
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
        with _translated(f"load {url}", self.url):
            driver.get(url)

    def evaluate(self, source: str, arg: Any = None) -> Any:
        """Run the JS function ``source`` (``async (arg) => ...``) with the JSON ``arg``
        in the current web context; returns its awaited JSON result.

        Raises ProbeFailed when the function throws or rejects, or the script times out.
        """
        driver = self._require()
        with _translated("execute_async_script", self.url):
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
            raise ProbeFailed(f"the page's script failed: {answer.get('error')}", hint=_THREW_HINT)
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
        with _translated(f"DevTools {command}", self.url):
            answer = driver.execute(_CDP_COMMAND, {"cmd": command, "params": dict(params or {})})
        value = answer.get("value") if isinstance(answer, dict) else None
        return dict(value) if isinstance(value, dict) else {}

    def to_background(self) -> None:
        """Send the app to the background and keep it there: ``mobile: backgroundApp``
        (seconds -1) from the native context; a browser session opens a new tab in front
        of the app's, which hides its page (``visibilitychange``). Raises ProbeFailed."""
        driver = self._require()
        if self.is_browser:
            with _translated("open a tab in front of the app", self.url):
                self._app_window = str(driver.current_window_handle)
                driver.switch_to.new_window("tab")
            return
        self._app_context = self.current_context()
        self.switch_to_native()
        with _translated("mobile: backgroundApp", self.url):
            driver.execute_script("mobile: backgroundApp", {"seconds": -1})

    def to_foreground(self, app_id: str | None) -> None:
        """Bring the app ``app_id`` (package or bundle id) back in front and commands back
        to its page (``mobile: activateApp``; a browser session closes the tab in front).
        Raises ProbeFailed."""
        driver = self._require()
        if self.is_browser:
            with _translated("close the tab in front of the app", self.url):
                if self._app_window and driver.current_window_handle != self._app_window:
                    driver.close()
                if self._app_window:
                    driver.switch_to.window(self._app_window)
            return
        ios = str(self.capabilities.get("platformName", "")).lower() == "ios"
        with _translated("mobile: activateApp", self.url):
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
            logger.warning("ending the appium session failed: %s", _message(exc))

    def journaled(self, journal: Journal, target: str) -> Entry:
        """Record the running session in ``journal`` as a change to device ``target``: a
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


#: How long a Ctrl-C during POST /session waits for Appium to finish starting the session,
#: to end it: a phone's session takes 5-30 s to start. Within the farm's 60 s grace for a
#: stopped run (devicelab.farm), so the run still puts its phone back after the wait.
_END_STARTING_WAIT_S = 45.0


class _Starting:
    """POST /session in a worker thread: a Ctrl-C stops only the wait for it, and the
    session Appium goes on creating is ended once it exists (``end_when_started``). Left
    to itself, it would hold the phone (or a stand-in's browser profile) until
    newCommandTimeout, since nothing else ever learns its id."""

    def __init__(self, start: Callable[[], Any]) -> None:
        self._start = start
        self._done = threading.Event()
        self._driver: Any = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="appium-new-session", daemon=True).start()

    def _run(self) -> None:
        try:
            self._driver = self._start()
        except BaseException as exc:  # handed to the caller's thread by result()
            self._error = exc
        finally:
            self._done.set()

    def wait(self) -> None:
        """Until POST /session has answered; a Ctrl-C (KeyboardInterrupt) stops the wait."""
        while not self._done.wait(0.2):  # short waits: the signal lands between them
            pass

    def result(self) -> Any:
        """The driver, or the error POST /session raised (translated by the caller)."""
        if self._error is not None:
            raise self._error
        return self._driver

    def end_when_started(self, where: str) -> None:
        """After a Ctrl-C: wait (up to _END_STARTING_WAIT_S; a second Ctrl-C gives up) for
        the session to start, then end it. Logs what happened; never raises but for that
        second KeyboardInterrupt, which it swallows (the caller re-raises the first)."""
        if not self._done.is_set():
            logger.warning(
                "interrupted while Appium at %s starts the session: waiting up to %.0f s "
                "to end it (Ctrl-C again leaves it open until newCommandTimeout)",
                where, _END_STARTING_WAIT_S,
            )  # fmt: skip
        try:
            started = self._done.wait(_END_STARTING_WAIT_S)
        except KeyboardInterrupt:
            started = False
        if not started:
            logger.warning(
                "left the Appium session that was starting on %s open: it ends after "
                "newCommandTimeout, or DELETE /session/ID with the ID from the server's "
                "log (docs/appium.md, 'A session nobody ends')",
                where,
            )
            return
        if self._driver is None:
            return  # it did not start: nothing to end
        session = self._driver.session_id
        try:
            self._driver.quit()
        except Exception as exc:  # the interrupt goes on whatever happened here
            logger.warning("ending the Appium session %s failed: %s", session, _message(exc))
        else:
            logger.info("ended the Appium session %s it had started meanwhile", session)


def _end_left_session(entry: Entry) -> None:
    """End the session a run that died left open (``AppiumSession.journaled``). Done
    when the server ended it or is gone (its sessions with it); raises OSError when the
    server answers otherwise (the entry stays pending)."""
    url = str(entry.data["url"]).rstrip("/")
    session = urllib.parse.quote(str(entry.data["session"]), safe="")
    request = urllib.request.Request(f"{url}/session/{session}", method="DELETE")
    # A loopback server is reached directly, whatever HTTP_PROXY the shell has.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code != 404:  # 404: "invalid session id", it ended already
            raise
    except urllib.error.URLError as exc:
        if not isinstance(exc.reason, ConnectionRefusedError):
            raise
    logger.info("ended %s", entry.data.get("what") or "an Appium session")


#: Journal undoers of this module (register them with the run's Journal for crash recovery).
UNDOERS = {SESSION_KIND: _end_left_session}
