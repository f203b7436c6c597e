"""The Android device of a run: a phone reached through the adb server.

Lifecycle of :class:`AndroidDevice`::

    create()      find the phone by its inventory serial; it must be online (else
                  DeviceUnreachable with what to do for its state); claim it for this
                  run (a second run on it stops here, before anything starts); undo what
                  a crashed run left on it; read its model and Android version (getprop)
    route(port)   send its traffic through the shaped proxy on ``port`` (adb reverse +
                  the global http_proxy, devicelab.platforms.routing) and keep its screen
                  on while plugged in: each change journaled before it is made
    info()        the device as results.json names it
    close()       undo every change, newest first, every step even through Ctrl-C
                  (logs failures; ``left`` names what could not be undone); let the
                  phone go once nothing is left

What a run changes on the phone, and nothing more: the route, and
``stay_on_while_plugged_in`` (a screen that goes off throttles the WebView's timers and
suspends its sockets mid-measurement). The app's data is never cleared and the app is
not force-stopped: the Appium session opens it as the inventory's capabilities say
(``appium:noReset``). Every change is in the journal (devicelab.journal) before it is
made, so it is undone on exit, on Ctrl-C, and at the next start after a crash.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from typing import Any, Self

from devicelab.errors import DeviceUnreachable
from devicelab.journal import Claim, Entry, Journal, Undoer, held_interrupts
from devicelab.models import Device, DeviceInfo
from devicelab.platforms.android import AdbServer, describe
from devicelab.platforms.routing import AndroidRoute, adb_shell, android_undoers, changed_since

__all__ = ["SETTING_KIND", "STAY_ON", "AndroidDevice", "device_undoers"]

logger = logging.getLogger("devicelab.platforms.android_device")

SETTING_KIND = "android.setting"
#: global stay_on_while_plugged_in: 7 = on AC, USB and wireless power.
STAY_ON = ("global", "stay_on_while_plugged_in", "7")


def device_undoers(device_for: Callable[[str], Any]) -> dict[str, Undoer]:
    """The journal's undoers for every change an AndroidDevice makes (routing included);
    ``device_for(serial)`` finds the adbutils device."""

    def undo_setting(entry: Entry) -> None:
        namespace, key = str(entry.data["namespace"]), str(entry.data["key"])
        device = device_for(entry.target)
        if changed_since(device, entry, f"{namespace} {key}"):
            return  # the user's own value since: theirs to keep
        previous = str(entry.data.get("previous", "null"))
        command = (
            f"settings delete {namespace} {key}"
            if previous in ("", "null")
            else f"settings put {namespace} {key} {shlex.quote(previous)}"
        )
        adb_shell(device, command)

    return {**android_undoers(device_for), SETTING_KIND: undo_setting}


class AndroidDevice:
    """The inventory's android ``device`` for one run (see the module docstring)."""

    def __init__(
        self, device: Device, journal: Journal, *, server: AdbServer | None = None
    ) -> None:
        self.device = device
        self.serial = device.serial or ""
        self.journal = journal
        self.server = server or AdbServer()
        self.adb: Any = None
        self.props: dict[str, str] = {}
        self._route: AndroidRoute | None = None
        self._entries: list[Entry] = []
        self._claim: Claim | None = None

    def create(self) -> Self:
        """Find the phone, claim it for this run and read what it is. Raises
        DeviceUnreachable when the adb server does not answer or the phone is not online
        (the hint says what to do); EnvironmentProblem when another live run holds it."""
        state, detail = describe(self.serial, self.server.states())
        if state != "online":
            raise DeviceUnreachable(
                f"android device {self.device.id} ({self.serial}) is {state}",
                hint=detail or "check `adb devices -l`",
                serial=self.serial,
                command="adb devices",
            )
        self.adb = self.server.device(self.serial)
        # Claimed before anything else starts: a second run stops here, not after its
        # backend and proxy came up (nor after it read this run's proxy as the phone's).
        self._claim = self.journal.claim(self.serial, "in use")
        try:
            self.journal.undoers.update(device_undoers(self._device_for))
            # What a crashed run left on this phone (a sibling run recovers its own: all of
            # them at once raced on the same entries and said misleading things).
            self.journal.recover([self.serial])
            for key in ("ro.product.manufacturer", "ro.product.model",
                        "ro.build.version.release", "ro.build.version.sdk"):  # fmt: skip
                self.props[key] = adb_shell(self.adb, f"getprop {key}")
        except BaseException:
            self.close()  # nothing changed yet: lets the phone go, which no session will
            raise
        return self

    def _device_for(self, serial: str) -> Any:
        return self.adb if serial == self.serial else self.server.device(serial)

    def route(self, port: int) -> None:
        """Route the phone through the proxy on ``port`` and keep its screen on.
        Raises EnvironmentProblem when another run holds the phone, DeviceUnreachable
        (changes made so far stay journaled and are undone)."""
        # The route first: it claims the phone, so a second run on it stops before reading
        # a setting this run changed (and restoring it later as the phone's own).
        self._route = AndroidRoute(self.adb, port, self.journal, claimed=self._claim is not None)
        self._route.apply()
        namespace, key, value = STAY_ON
        previous = adb_shell(self.adb, f"settings get {namespace} {key}")
        was = "unset" if previous in ("", "null") else previous
        data = {"namespace": namespace, "key": key, "previous": previous, "set": value,
                "what": f"{key} {value} (was {was})"}  # fmt: skip
        self._entries.append(self.journal.record(SETTING_KIND, self.serial, data))
        adb_shell(self.adb, f"settings put {namespace} {key} {value}")

    def info(self) -> DeviceInfo:
        """The device for results.json: model and Android version as the phone reports
        them (the inventory's when it has not been read)."""
        maker, model = self.props.get("ro.product.manufacturer"), self.props.get("ro.product.model")
        name = " ".join(p for p in (maker, model) if p) if model else self.device.model
        release, sdk = (
            self.props.get("ro.build.version.release"),
            self.props.get("ro.build.version.sdk"),
        )
        os_name = (
            f"Android {release}" + (f" (API {sdk})" if sdk else "") if release else self.device.os
        )
        return DeviceInfo(id=self.device.id, platform="android", model=name, os=os_name)

    @property
    def left(self) -> list[Entry]:
        """What ``close()`` could not undo (still pending in the journal), oldest first."""
        return list(self._entries)

    def close(self) -> None:
        """Undo the route and the settings, newest first; logs failures. Every step runs
        even through Ctrl-C: raises nothing but HeldInterrupt, after them, when one came.
        The phone is let go once nothing is left (else a second ``close()`` retries)."""
        # Held around the bookkeeping too: the Ctrl-C comes once the phone's state is known.
        with held_interrupts():
            route, self._route = self._route, None
            if route is not None:  # its changes are older than the settings: undone last
                self._entries = [*route.left, *self._entries]
            # One undo for all: one "stay pending" line.
            failed = {entry.id for entry, _ in self.journal.undo(self._entries)}
            self._entries = [e for e in self._entries if e.id in failed]
            if not self._entries and self._claim is not None:
                self._claim.release()
                self._claim = None

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()
