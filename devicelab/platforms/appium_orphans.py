"""Appium sessions nobody else would end: one a Ctrl-C interrupted while Appium was
starting it, and one a run that died left open (docs/appium.md, "A session nobody ends").

Appium keeps a session until ``DELETE /session/ID`` or newCommandTimeout (10 min), the
phone (or a stand-in's browser profile) busy meanwhile, and only its id ends it earlier.
``Starting`` runs POST /session in a worker thread, so that a Ctrl-C stops only the wait
and the session is ended once it exists. ``AppiumSession.journaled``
(devicelab.platforms.appium) records a running session as a ``SESSION_KIND`` journal entry;
``UNDOERS`` end the one a run killed outright left, at the next run on that phone.

A session still starting has no id yet. So before POST /session, ``AppiumSession.create``
records a ``PENDING_KIND`` entry with a claim token it also sends as the capability
``CLAIM_CAPABILITY``, which Appium keeps in the session's capabilities. Its undo looks the
token up in ``GET /appium/sessions`` (Appium 3's session discovery: the server must run
with ``--allow-insecure=*:session_discovery``) and ends the sessions that carry it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from devicelab.journal import Entry
from devicelab.platforms.appium_errors import message, redacted_url

__all__ = ["CLAIM_CAPABILITY", "PENDING_KIND", "SESSION_KIND", "UNDOERS", "Starting"]

logger = logging.getLogger("devicelab.platforms.appium")

#: The journal's kind of an Appium session a run started (its undo: DELETE /session/ID).
SESSION_KIND = "appium.session"
#: The journal's kind of a session being started, known by its claim token only (its undo:
#: the sessions ``GET /appium/sessions`` shows with that token, ended).
PENDING_KIND = "appium.session.pending"
#: The vendor capability that carries the claim token; Appium lists it without its prefix.
CLAIM_CAPABILITY = "appium:devicelabClaim"
_CLAIM_LISTED = CLAIM_CAPABILITY.removeprefix("appium:")
#: A pending entry this young whose session is not listed yet stays pending (the next run
#: looks again): Appium may still be starting it (a phone's session takes 5-30 s).
_STILL_STARTING_S = 120.0
#: What a pending entry's undo says when it cannot look the session up.
_DISCOVERY_HINT = (
    "it holds the phone until newCommandTimeout unless ended by hand (docs/appium.md, "
    "'A session nobody ends'); start that Appium with --allow-insecure=*:session_discovery "
    "for later runs to end such sessions themselves"
)

#: How long a Ctrl-C during POST /session waits for Appium to finish starting the session,
#: to end it: a phone's session takes 5-30 s to start. Within the farm's 60 s grace for a
#: stopped run (devicelab.farm), so the run still puts its phone back after the wait.
_END_STARTING_WAIT_S = 45.0


class Starting:
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

    def end_when_started(self, where: str) -> bool:
        """After a Ctrl-C: wait (up to _END_STARTING_WAIT_S; a second Ctrl-C gives up) for
        the session to start, then end it. Returns whether nothing is left open (ended, or
        never started). Logs what happened; never raises, and swallows that second
        KeyboardInterrupt (the caller re-raises the first)."""
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
                "left the Appium session that was starting on %s open: ended by its "
                "claim at teardown or by the next run on the phone (docs/appium.md, "
                "'A session nobody ends')",
                where,
            )
            return False
        if self._driver is None:
            return True  # it did not start: nothing to end
        session = self._driver.session_id
        try:
            self._driver.quit()
        except Exception as exc:  # the interrupt goes on whatever happened here
            logger.warning("ending the Appium session %s failed: %s", session, message(exc))
            return False
        logger.info("ended the Appium session %s it had started meanwhile", session)
        return True


def _opener() -> urllib.request.OpenerDirector:
    # A loopback server is reached directly, whatever HTTP_PROXY the shell has.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _delete(url: str, session: str) -> None:
    """DELETE /session/``session``; done when it ended already (404) or the server is
    gone (its sessions with it). Raises OSError when the server answers otherwise."""
    quoted = urllib.parse.quote(session, safe="")
    request = urllib.request.Request(f"{url}/session/{quoted}", method="DELETE")
    try:
        with _opener().open(request, timeout=10):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code != 404:  # 404: "invalid session id", it ended already
            raise
    except urllib.error.URLError as exc:
        if not isinstance(exc.reason, ConnectionRefusedError):
            raise


def _end_left_session(entry: Entry) -> None:
    """End the session a run that died left open (``AppiumSession.journaled``). Done
    when the server ended it or is gone (its sessions with it); raises OSError when the
    server answers otherwise (the entry stays pending)."""
    _delete(str(entry.data["url"]).rstrip("/"), str(entry.data["session"]))
    logger.info("ended %s", entry.data.get("what") or "an Appium session")


def _refusal(exc: urllib.error.HTTPError) -> str:
    """Appium's reason for an error answer (its JSON ``value.message``), on one line."""
    try:
        text = str(json.loads(exc.read())["value"]["message"])
    except (OSError, ValueError, KeyError, TypeError):
        text = ""
    first = text.splitlines()[0].split(". ")[0][:160] if text else ""
    return f"HTTP {exc.code}: {first}" if first else f"HTTP {exc.code}"


def _end_claimed_session(entry: Entry) -> None:
    """End the sessions that carry the claim of a pending entry (one a run left while
    Appium was starting it): those ``GET /appium/sessions`` lists with it, each ended by
    DELETE. When the server refuses discovery or does not answer, warns in one line and
    is done (the entry is dropped). Raises OSError (the entry stays pending) when a
    DELETE fails, or when no session carries the claim yet and the entry is young."""
    url = str(entry.data["url"]).rstrip("/")
    claim, where = str(entry.data["claim"]), redacted_url(url)
    try:
        with _opener().open(f"{url}/appium/sessions", timeout=10) as answer:
            listed = json.loads(answer.read())["value"]
    except urllib.error.HTTPError as exc:
        logger.warning(
            "cannot find the Appium session a run left starting on %s (claim %s): the "
            "server refuses session discovery (%s); %s", where, claim, _refusal(exc),
            _DISCOVERY_HINT,
        )  # fmt: skip
        return
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if isinstance(getattr(exc, "reason", None), ConnectionRefusedError):
            logger.info("the Appium server %s is gone, its sessions with it", where)
        else:  # no answer, or not Appium's
            logger.warning(
                "cannot find the Appium session a run left starting on %s (claim %s): "
                "%s; %s", where, claim, message(exc), _DISCOVERY_HINT,
            )  # fmt: skip
        return
    ours = [str(found["id"]) for found in listed if _carries(found, claim)]
    if not ours and time.time() - entry.at < _STILL_STARTING_S:
        raise OSError(f"no session on {where} carries the claim {claim} yet: Appium may "
                      "still be starting it")  # fmt: skip
    for session in ours:
        _delete(url, session)
        logger.info("ended the Appium session %s a run left starting on %s", session, where)


def _carries(found: object, claim: str) -> bool:
    """Whether ``found`` (one session of ``GET /appium/sessions``) carries ``claim``."""
    if not isinstance(found, dict) or "id" not in found:
        return False
    caps = found.get("capabilities")
    return isinstance(caps, dict) and claim in (caps.get(_CLAIM_LISTED), caps.get(CLAIM_CAPABILITY))


#: Journal undoers of this module (register them with the run's Journal for crash recovery).
UNDOERS = {SESSION_KIND: _end_left_session, PENDING_KIND: _end_claimed_session}
