"""Appium sessions nobody else would end: one a Ctrl-C interrupted while Appium was
starting it, and one a run that died left open (docs/appium.md, "A session nobody ends").

Appium keeps a session until ``DELETE /session/ID`` or newCommandTimeout (10 min), the
phone (or a stand-in's browser profile) busy meanwhile, and only its id ends it earlier.
``Starting`` runs POST /session in a worker thread, so that a Ctrl-C stops only the wait
and the session is ended once it exists. ``AppiumSession.journaled``
(devicelab.platforms.appium) records a running session as a ``SESSION_KIND`` journal entry;
``UNDOERS`` end the one a run killed outright left, at the next run on that phone.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from devicelab.journal import Entry
from devicelab.platforms.appium_errors import message

__all__ = ["SESSION_KIND", "UNDOERS", "Starting"]

logger = logging.getLogger("devicelab.platforms.appium")

#: The journal's kind of an Appium session a run started (its undo: DELETE /session/ID).
SESSION_KIND = "appium.session"

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
            logger.warning("ending the Appium session %s failed: %s", session, message(exc))
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
