"""Selenium's and the Appium client's exceptions, translated into devicelab's.

``translated`` is the one place they map (``raise ... from``), around every call
``AppiumSession`` (devicelab.platforms.appium) makes: a server that does not answer or a
session that does not start is DeviceUnreachable; capabilities Appium refuses as invalid
are BadInput; a missing context, a script that throws or times out is ProbeFailed. The
messages show a server's URL without its credentials (``redacted_url``).
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator

from devicelab.errors import BadInput, DeviceUnreachable, ProbeFailed

__all__ = [
    "NEW_SESSION",
    "THREW_HINT",
    "WEBVIEW_HINT",
    "message",
    "redacted_url",
    "translated",
]

WEBVIEW_HINT = (
    "enable WebView debugging in the app: Capacitor android.webContentsDebuggingEnabled "
    "(ios.webContentsDebuggingEnabled on iOS 16.4+) in capacitor.config, then rebuild it"
)
#: What ``translated`` calls POST /session.
NEW_SESSION = "new session"

# A page in the background, or behind a locked screen, runs no script until it is in front.
_PAUSED_HINT = "keep the device unlocked with the app in front, then run again"
THREW_HINT = "the page threw it: restart the app (capacitor-harness/app's test build), run again"


def redacted_url(url: str) -> str:
    """``url`` with its user:password replaced by ``***`` (cloud Appium URLs carry keys
    there): what messages and ``info()`` may show. Returns ``url`` unchanged without."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        netloc = f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def message(exc: BaseException) -> str:
    """The first line of a WebDriver error (selenium appends stack traces)."""
    text = str(getattr(exc, "msg", None) or exc).strip().removeprefix("Message: ")
    text = text.split("; For documentation on this error")[0]
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def translated(what: str, url: str) -> Iterator[None]:
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
            f"no Appium server answers at {redacted_url(url)} ({what}): {message(exc)}",
            hint="start one (docs/appium.md: tools/appium/node_modules/.bin/appium) or fix "
            "the device's appium.url in the inventory",
            command=what,
        ) from exc
    except InvalidArgumentException as exc:
        raise BadInput(
            f"Appium refused the capabilities ({what}): {message(exc)}",
            hint="fix the device's appium.capabilities in the inventory",
        ) from exc
    except SessionNotCreatedException as exc:
        raise _not_started(exc, what, url) from exc
    except NoSuchContextException as exc:
        raise ProbeFailed(
            f"no such Appium context ({what}): {message(exc)}", hint=WEBVIEW_HINT
        ) from exc
    except (JavascriptException, TimeoutException) as exc:
        hint = _PAUSED_HINT if isinstance(exc, TimeoutException) else THREW_HINT
        raise ProbeFailed(
            f"the page's script failed ({what}): {message(exc)}", hint=hint, command=what
        ) from exc
    except WebDriverException as exc:
        if what == NEW_SESSION:  # Appium answers a driver it cannot find with a 500
            raise _not_started(exc, what, url) from exc
        raise ProbeFailed(
            f"Appium {what} failed: {message(exc)}",
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
        f"the Appium session did not start: {message(exc)}",
        hint="check the device, the capabilities and the driver (appium driver list "
        "--installed); the server's log says more. A session a run killed while it started "
        "left holds the phone (a stand-in's browser profile: 'Chrome instance exited') "
        "until newCommandTimeout: its ID is in the server's log ('session ID added to "
        f"master session list'; <out>/appium.log for a local one), `curl -X DELETE {where}"
        "/session/ID` ends it; then stop a stand-in Chromium still running with that "
        "--user-data-dir (docs/appium.md)",
        command=what,
    )
