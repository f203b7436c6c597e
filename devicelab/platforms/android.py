"""Android devices through the adb server (adbutils).

``AdbServer`` is one adb server (host and port from ``ANDROID_ADB_SERVER_HOST`` /
``ANDROID_ADB_SERVER_PORT``, as adb itself reads them; 127.0.0.1:5037 by default).
Lifecycle: nothing to open or close; each call is one request to the server, which
adbutils starts first when none answers (as ``adb devices`` does). adbutils' errors are
translated here, and only here, into devicelab's (``raise ... from``).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from devicelab.errors import DeviceUnreachable, ToolMissing
from devicelab.ports import env_port

__all__ = ["ADB_STATES", "AdbServer", "describe"]

# What the adb server says of a device -> (our state, what to do about it).
ADB_STATES: dict[str, tuple[str, str]] = {
    "device": ("online", ""),
    "offline": ("offline", "reconnect the cable (or `adb reconnect offline`)"),
    "unauthorized": (
        "unauthorized",
        "unlock the phone and accept the 'Allow USB debugging?' prompt",
    ),
    "no permissions": (
        "no-permissions",
        "add a udev rule for the phone's USB vendor id, or run the adb server as root",
    ),
    "authorizing": ("authorizing", "wait a moment and retry"),
    "connecting": ("connecting", "wait a moment and retry"),
    "recovery": ("recovery", "reboot the phone into Android"),
    "sideload": ("sideload", "reboot the phone into Android"),
    "bootloader": ("bootloader", "reboot the phone into Android"),
}


def describe(serial: str, listed: dict[str, str]) -> tuple[str, str]:
    """(state, detail) of the device ``serial`` given the server's listing."""
    if serial not in listed:
        if serial.upper().startswith("REPLACE-WITH"):
            return "absent", "set this device's serial in the inventory (`adb devices -l`)"
        return "absent", "not attached: check the cable, or `adb connect HOST:PORT`"
    state, detail = ADB_STATES.get(listed[serial], (listed[serial], ""))
    return state, detail


class AdbServer:
    """The adb server devicelab talks to (see the module docstring)."""

    DEFAULT_PORT = 5037

    def __init__(self, host: str | None = None, port: int | None = None) -> None:
        self.host = host or os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
        self.port = port or env_port("ANDROID_ADB_SERVER_PORT", self.DEFAULT_PORT)

    def _client(self) -> Any:
        try:
            import adbutils
        except ImportError as exc:
            raise ToolMissing("adbutils", hint="pip install adbutils") from exc
        return adbutils.AdbClient(host=self.host, port=self.port, socket_timeout=10)

    def states(self) -> dict[str, str]:
        """Every device the server knows, serial -> adb's state (device, offline,
        unauthorized, ...).

        Raises DeviceUnreachable when no server answers and none can be started.
        """
        import adbutils

        try:
            return {info.serial: info.state for info in self._client().list()}
        except (adbutils.AdbError, OSError) as exc:
            if self._something_listens():
                # Something took the port and answered, but not as an adb server does (or
                # not at all): installing or starting adb would not help.
                raise DeviceUnreachable(
                    f"something that is not an adb server answers on {self.host}:{self.port}"
                    f": {exc}",
                    hint="stop what listens on that port, or set ANDROID_ADB_SERVER_PORT to "
                    "your adb server's port (`adb start-server` starts one on 5037)",
                    command="adb devices",
                ) from exc
            raise DeviceUnreachable(
                f"no adb server answers on {self.host}:{self.port}: {exc}",
                hint="install adb (apt-get install -y adb) and run `adb start-server`",
                command="adb devices",
            ) from exc

    def _something_listens(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def device(self, serial: str) -> Any:
        """adbutils' AdbDevice for ``serial`` on this server (no request is made yet)."""
        return self._client().device(serial=serial)

    def info(self) -> dict[str, str]:
        """Where the server is, for reports and ``doctor``."""
        return {"host": self.host, "port": str(self.port)}
