"""iPhones through usbmuxd and lockdownd (pymobiledevice3's async API).

``Usbmuxd`` is the daemon that lists the iPhones this machine sees, over USB or Wi-Fi
sync (``Network``), and keeps the host's pair records. Its address comes from
``USBMUXD_SOCKET_ADDRESS`` (``HOST:PORT`` or a socket path, as libusbmuxd reads it),
else /var/run/usbmuxd. ``Lockdownd`` is one iPhone's lockdownd (port 62078), reached
through usbmuxd; devicelab reads from it only the values a phone gives without a
session (as ``ideviceinfo --simple`` does), so asking never starts pairing.

Lifecycle: nothing to open or close; each call opens its own connections in a private
event loop and closes them before it returns. pymobiledevice3 is the optional ``ios``
extra, imported inside the calls; its errors are translated here, and only here, into
devicelab's (``raise ... from``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from devicelab.errors import BadInput, DeviceUnreachable, ProbeFailed, ToolMissing

__all__ = [
    "IosListing",
    "Lockdownd",
    "Usbmuxd",
    "describe",
    "listing_of",
    "open_lockdown",
    "run_private",
]

_TIMEOUT = 10.0
_INSTALL_HINT = "install usbmuxd (apt-get install -y usbmuxd) and plug the iPhone in"
_TRUST_HINT = (
    "unlock the iPhone, run `pymobiledevice3 lockdown pair` (or `idevicepair pair`) "
    "and tap Trust on 'Trust This Computer?'"
)
_RESTART_HINT = (
    "check that USBMUXD_SOCKET_ADDRESS (or /var/run/usbmuxd) is usbmuxd, "
    "and restart it (systemctl restart usbmuxd)"
)
_CONNECTIONS = {"USB": "USB", "Network": "Wi-Fi"}


@dataclass(frozen=True)
class IosListing:
    """One iPhone as usbmuxd lists it: how it is connected and whether we hold its
    pair record (``paired`` is None when this usbmuxd cannot say: the binary protocol).
    """

    udid: str
    connections: tuple[str, ...]
    paired: bool | None

    @property
    def over(self) -> str:
        """``over USB``, ``over Wi-Fi`` or ``over USB and Wi-Fi``."""
        names = [_CONNECTIONS.get(c, c) for c in self.connections]
        return "over " + " and ".join(names)


def _key(udid: str) -> str:
    # usbmuxd may list a UDID without its dash (00008030-... -> 00008030...).
    return udid.replace("-", "").upper()


def listing_of(udid: str, listed: dict[str, IosListing]) -> IosListing | None:
    """The iPhone ``udid`` in usbmuxd's listing (with or without the UDID's dash)."""
    by_key = {_key(serial): listing for serial, listing in listed.items()}
    return by_key.get(_key(udid))


def describe(udid: str, listed: dict[str, IosListing]) -> tuple[str, str]:
    """(state, detail) of the iPhone ``udid`` given usbmuxd's listing."""
    listing = listing_of(udid, listed)
    if listing is None:
        if "REPLACE-WITH" in udid.upper():
            return (
                "absent",
                "set this device's udid in the inventory (`pymobiledevice3 usbmux list`)",
            )
        return "absent", "not attached: plug the iPhone in, unlock it, or turn on Wi-Fi sync"
    if listing.paired is False:
        return "unpaired", f"{listing.over}, not paired: {_TRUST_HINT}"
    if listing.paired is None:
        return "online", f"{listing.over} (pairing not known: binary usbmuxd)"
    return "online", listing.over


def run_private[T](work: Callable[[], Awaitable[T]], timeout_s: float = _TIMEOUT) -> T:
    """Run ``work()`` to completion within ``timeout_s`` in a private event loop: in this
    thread when it has none, else in a worker thread (a caller inside async code).
    Raises TimeoutError, or what ``work`` raises."""

    async def bounded() -> T:
        return await asyncio.wait_for(work(), timeout=timeout_s)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="devicelab-ios") as pool:
        return pool.submit(asyncio.run, bounded()).result()


#: One lock per phone (UDID) for opening its lockdown session in this process.
_OPENING: dict[str, threading.Lock] = {}
_OPENING_GUARD = threading.Lock()
#: How often a second opener looks whether the first is done.
_OPENING_POLL_S = 0.02


async def open_lockdown(udid: str, usbmux_address: str | None) -> Any:
    """pymobiledevice3's ``create_using_usbmux`` for ``udid``, one at a time per phone in
    this process (a run's sampler and its web inspector check open sessions of their own,
    each in its own event loop and thread). On a phone not yet paired, the first pairs it
    (the phone asks to trust this computer) and saves the pair record; a second pairing
    at once would save another, and the one the phone kept may not be the one on disk.
    Waiting polls the lock, so a caller cancelled (its timeout) while waiting holds
    nothing. Raises what create_using_usbmux raises (ImportError without the extra)."""
    from pymobiledevice3.lockdown import create_using_usbmux

    with _OPENING_GUARD:
        lock = _OPENING.setdefault(udid, threading.Lock())
    while not lock.acquire(blocking=False):
        await asyncio.sleep(_OPENING_POLL_S)
    try:
        return await create_using_usbmux(serial=udid, usbmux_address=usbmux_address)
    finally:
        lock.release()


def _usbmuxd_unreachable(message: str, hint: str = _INSTALL_HINT) -> DeviceUnreachable:
    return DeviceUnreachable(message, hint=hint, command="pymobiledevice3 usbmux list")


def _usbmux() -> Any:
    try:
        from pymobiledevice3 import usbmux
    except ImportError as exc:
        raise ToolMissing("pymobiledevice3", hint="pip install 'devicelab[ios]'") from exc
    return usbmux


class Usbmuxd:
    """The usbmuxd devicelab talks to (see the module docstring).

    Protocol: usbmux version 1 (plist messages): ``ListDevices``, then one
    ``ReadPairRecord`` per phone on the same connection.
    """

    ENV = "USBMUXD_SOCKET_ADDRESS"
    DEFAULT_ADDRESS = "/var/run/usbmuxd"

    def __init__(self, address: str | None = None) -> None:
        self.address = address or os.environ.get(self.ENV) or self.DEFAULT_ADDRESS
        host, colon, port = self.address.rpartition(":")
        if colon and host and not self.address.startswith("/"):  # HOST:PORT, not a path
            digits = port.isascii() and port.isdigit()
            if not (digits and 1 <= int(port) <= 65535):
                raise BadInput(
                    f"{self.ENV}={self.address}: {port!r} is not a TCP port (1-65535)",
                    hint=f"set {self.ENV} to HOST:PORT or a socket path, or unset it",
                )

    def states(self) -> dict[str, IosListing]:
        """Every iPhone usbmuxd lists, UDID (as listed) -> how it is connected and paired.

        Raises ToolMissing without pymobiledevice3, DeviceUnreachable when no usbmuxd
        answers (or it answers nonsense, or not within 10 s).
        """
        usbmux = _usbmux()
        from pymobiledevice3.exceptions import (
            ConnectionFailedToUsbmuxdError,
            NotPairedError,
            PyMobileDevice3Exception,
        )

        async def ask() -> dict[str, IosListing]:
            mux = await usbmux.create_mux(usbmux_address=self.address)
            try:
                await mux.get_device_list(0.1)
                connections: dict[str, list[str]] = {}
                for device in mux.devices:
                    connections.setdefault(device.serial, []).append(device.connection_type)
                listed = {}
                for udid, kinds in connections.items():
                    paired: bool | None = None
                    if isinstance(mux, usbmux.PlistMuxConnection):
                        try:
                            await mux.get_pair_record(udid)
                            paired = True
                        except NotPairedError:
                            paired = False
                    order = sorted(set(kinds), key=lambda k: (k != "USB", k))  # USB first
                    listed[udid] = IosListing(udid, tuple(order), paired)
                return listed
            finally:
                await mux.close()

        try:
            return run_private(ask)
        except ConnectionFailedToUsbmuxdError as exc:
            raise _usbmuxd_unreachable(
                f"no usbmuxd answers on {self.address}: nothing listens there"
            ) from exc
        except TimeoutError as exc:
            raise _usbmuxd_unreachable(
                f"usbmuxd on {self.address} did not answer within {_TIMEOUT:.0f} s",
                _RESTART_HINT,
            ) from exc
        except (PyMobileDevice3Exception, OSError, ValueError) as exc:
            # ValueError: a reply that is not usbmux (bytestruct and plistlib raise it)
            why = str(exc) or type(exc).__name__
            raise _usbmuxd_unreachable(
                f"usbmuxd on {self.address} failed: {why}", _RESTART_HINT
            ) from exc

    def info(self) -> dict[str, str]:
        """Where usbmuxd is, for reports and ``doctor``."""
        return {"address": self.address}


class Lockdownd:
    """One iPhone's lockdownd, reached through usbmuxd (see the module docstring).

    Protocol: ``QueryType`` (must answer ``com.apple.mobile.lockdown``), then one
    ``GetValue`` per key, without a session.
    """

    PORT = 62078
    SERVICE_TYPE = "com.apple.mobile.lockdown"
    KEYS = ("DeviceName", "ProductType", "ProductVersion", "BuildVersion")
    LABEL = "devicelab"

    def __init__(self, udid: str, usbmuxd: Usbmuxd | None = None) -> None:
        self.udid = udid
        self.usbmuxd = usbmuxd or Usbmuxd()

    def values(self) -> dict[str, Any]:
        """The phone's values for ``KEYS`` (a key the phone does not give is left out).

        Raises ToolMissing without pymobiledevice3, DeviceUnreachable when usbmuxd does
        not list the phone or cannot reach its lockdownd, ProbeFailed when something
        other than lockdownd answers.
        """
        _usbmux()
        from pymobiledevice3.exceptions import (
            ConnectionFailedToUsbmuxdError,
            DeviceNotFoundError,
            PyMobileDevice3Exception,
        )
        from pymobiledevice3.service_connection import ServiceConnection

        async def ask() -> dict[str, Any]:
            service = await ServiceConnection.create_using_usbmux(
                self.udid, self.PORT, usbmux_address=self.usbmuxd.address
            )
            try:
                kind = await service.send_recv_plist({"Label": self.LABEL, "Request": "QueryType"})
                if kind.get("Type") != self.SERVICE_TYPE:
                    raise ProbeFailed(
                        f"{self.udid} port {self.PORT} is not lockdownd: {kind!r}",
                        hint="reboot the iPhone into iOS (it may be in recovery mode)",
                    )
                found = {}
                for key in self.KEYS:
                    request = {"Label": self.LABEL, "Request": "GetValue", "Key": key}
                    reply = await service.send_recv_plist(request)
                    if "Value" in reply and "Error" not in reply:
                        found[key] = reply["Value"]
                return found
            finally:
                await service.close()

        try:
            return run_private(ask)
        except ConnectionFailedToUsbmuxdError as exc:
            raise _usbmuxd_unreachable(
                f"no usbmuxd answers on {self.usbmuxd.address}: nothing listens there"
            ) from exc
        except DeviceNotFoundError as exc:
            raise DeviceUnreachable(
                f"usbmuxd does not list {self.udid}",
                hint="plug the iPhone in and unlock it",
                serial=self.udid,
                command="pymobiledevice3 usbmux list",
            ) from exc
        except (PyMobileDevice3Exception, OSError, ValueError) as exc:
            # TimeoutError is an OSError; ValueError: a reply that is not a plist
            raise DeviceUnreachable(
                f"cannot reach lockdownd on {self.udid}: {str(exc) or type(exc).__name__}",
                hint="unlock the iPhone and reconnect it; check `pymobiledevice3 usbmux list`",
                serial=self.udid,
                command="pymobiledevice3 lockdown info",
            ) from exc

    def info(self) -> dict[str, str]:
        """The phone as results.json names it: udid, model (ProductType), os, name."""
        values = self.values()
        version = values.get("ProductVersion")
        return {
            "udid": self.udid,
            "model": str(values.get("ProductType", "")),
            "os": f"iOS {version}" if version else "",
            "name": str(values.get("DeviceName", "")),
        }
