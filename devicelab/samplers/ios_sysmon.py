"""The app's CPU and memory on an iPhone: sysmontap of the DVT instruments server
(pymobiledevice3, the ``ios`` extra, imported inside the calls).

Where the instruments server is:

- iOS 14-16: lockdownd starts ``com.apple.instruments.remoteserver.DVTSecureSocketProxy``
  once the developer disk image is mounted (``pymobiledevice3 mounter auto-mount``);
  without it lockdownd refuses the service (``InvalidService``).
- iOS 17 and later: lockdownd no longer serves it; it is reached through a developer
  tunnel (RemoteXPC) that ``sudo pymobiledevice3 remote tunneld`` keeps open. devicelab
  asks that tunneld on 127.0.0.1:49151, or on ``DEVICELAB_TUNNELD`` (HOST:PORT).

What is read: one sysmontap window per reading, until a sample names the app's process
(the app's executable, inventory ``app.process``, default ``App``: the executable of a
Capacitor iOS project). WKWebView runs the page (its JS heap and DOM) in WebKit processes
of their own (``com.apple.WebKit.WebContent``, ``.Networking``, ``.GPU``) whose
``responsiblePID`` is the app, as Android's WebView renderer is a process of its own.
The app's memory is the ``physFootprint`` (what Xcode's memory gauge and jetsam count) of
the app and those processes together; its CPU their ``cpuUsage`` (percent of one core)
summed and divided by the device's cores.

sysmontap can stay silent while XCUITest runs: a window without process rows is
reported as such (:data:`SYSMONTAP_SILENT`), never as a zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from devicelab.errors import DeviceUnreachable, ProbeFailed

__all__ = [
    "DEFAULT_PROCESS",
    "SYSMONTAP_SILENT",
    "TUNNELD_ENV",
    "AppUsage",
    "app_usage",
    "read_processes",
    "tunneld_address",
]

#: The executable of a Capacitor iOS app (the Xcode target Capacitor creates is "App").
DEFAULT_PROCESS = "App"
TUNNELD_ENV = "DEVICELAB_TUNNELD"
_TUNNELD_DEFAULT = ("127.0.0.1", 49151)
SYSMONTAP_SILENT = (
    "sysmontap sent no process data (it stays silent while XCUITest runs: sample CPU and "
    "memory outside the UI test, or rely on the battery readings)"
)
_MOUNT_HINT = "mount the developer disk image: pymobiledevice3 mounter auto-mount"
_TUNNEL_HINT = (
    "start a developer tunnel: sudo pymobiledevice3 remote tunneld "
    f"(devicelab asks it on 127.0.0.1:49151, or on {TUNNELD_ENV}=HOST:PORT)"
)
_MB = 1e6


@dataclass(frozen=True)
class AppUsage:
    """The app's share of one sysmontap sample: its pid, and its footprint (MB) and CPU
    (% of the device) with the WebKit processes working for it."""

    pid: int
    footprint_mb: float | None
    cpu_pct: float | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def app_usage(
    rows: Iterable[Mapping[str, Any]], process: str, cpu_count: int = 1
) -> AppUsage | None:
    """The usage of ``process`` and the processes whose ``responsiblePID`` is its pid,
    over sysmontap's per-process rows (dicts with ``name``, ``pid``, ``responsiblePID``,
    ``cpuUsage`` in percent of one core, ``physFootprint`` in bytes). Returns None when
    no row names ``process``. A sum with a missing value in it is None (not a part)."""
    rows = list(rows)
    app = next((r for r in rows if r.get("name") == process), None)
    if app is None:
        return None
    pid = int(app.get("pid") or 0)
    helpers = [r for r in rows if r is not app and pid and r.get("responsiblePID") == pid]
    counted = [app, *helpers]
    footprints = [_number(r.get("physFootprint")) for r in counted]
    cpus = [_number(r.get("cpuUsage")) for r in counted]
    footprint = None if None in footprints else sum(f for f in footprints if f is not None)
    cpu = None if None in cpus else sum(c for c in cpus if c is not None)
    return AppUsage(
        pid=pid,
        footprint_mb=_mb(footprint),
        cpu_pct=round(cpu / max(cpu_count, 1), 2) if cpu is not None else None,
    )


def _mb(value: float | None) -> float | None:
    return round(value / _MB, 3) if value is not None else None


def tunneld_address() -> tuple[str, int]:
    """Where tunneld listens: ``DEVICELAB_TUNNELD`` (HOST:PORT) or 127.0.0.1:49151.
    Raises ProbeFailed when the variable is not HOST:PORT."""
    value = os.environ.get(TUNNELD_ENV, "").strip()
    if not value:
        return _TUNNELD_DEFAULT
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ProbeFailed(
            f"{TUNNELD_ENV}={value!r} is not HOST:PORT",
            hint=f"set {TUNNELD_ENV}=127.0.0.1:49151 (where tunneld listens) or unset it",
        )
    return host.strip("[]"), int(port)


@contextlib.asynccontextmanager
async def _instruments(lockdown: Any, udid: str) -> AsyncIterator[Any]:
    """The DVT provider of the phone behind ``lockdown``: over lockdownd before iOS 17,
    through tunneld from iOS 17 on. Raises DeviceUnreachable with what to do."""
    from pymobiledevice3.exceptions import (
        InvalidServiceError,
        StartServiceError,
        TunneldConnectionError,
    )
    from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider

    version = str(getattr(lockdown, "product_version", "") or "0")
    first = version.split(".", maxsplit=1)[0]
    major = int(first) if first.isdigit() else 0
    if major >= 17:
        from pymobiledevice3.tunneld.api import get_tunneld_device_by_udid

        address = tunneld_address()
        where = f"{address[0]}:{address[1]}"
        try:
            rsd = await get_tunneld_device_by_udid(udid, address)
        except TunneldConnectionError as exc:
            raise DeviceUnreachable(
                f"iOS {version}: the instruments need a developer tunnel, and no tunneld "
                f"answers on {where}",
                hint=_TUNNEL_HINT,
                serial=udid,
                command="pymobiledevice3 remote tunneld",
            ) from exc
        if rsd is None:
            raise DeviceUnreachable(
                f"iOS {version}: tunneld on {where} has no tunnel to {udid}",
                hint="plug the iPhone in, unlock it, turn on Developer Mode "
                "(Settings > Privacy & Security); tunneld opens the tunnel by itself",
                serial=udid,
                command="pymobiledevice3 remote tunneld",
            )
        try:
            async with DvtProvider(rsd) as dvt:
                yield dvt
        finally:
            await rsd.close()
        return
    try:
        provider = DvtProvider(lockdown)
        await provider.connect()
    except (InvalidServiceError, StartServiceError) as exc:
        # What lockdownd answers when the developer disk image is not mounted.
        raise DeviceUnreachable(
            f"iOS {version}: lockdownd does not start the instruments server on {udid}: "
            "the developer disk image is not mounted",
            hint=_MOUNT_HINT,
            serial=udid,
            command="pymobiledevice3 mounter auto-mount",
        ) from exc
    try:
        yield provider
    finally:
        await provider.close()


async def read_processes(
    lockdown: Any, udid: str, process: str, window_s: float
) -> tuple[list[dict[str, Any]], int]:
    """sysmontap's process rows until one names ``process`` or ``window_s`` passes, and
    the device's core count. Rows are [] when sysmontap stayed silent. Raises
    DeviceUnreachable when the instruments server cannot be reached (with the fix),
    pymobiledevice3's errors when the connection breaks."""
    from pymobiledevice3.services.dvt.instruments.device_info import DeviceInfo
    from pymobiledevice3.services.dvt.instruments.sysmontap import Sysmontap

    async with _instruments(lockdown, udid) as dvt:
        async with DeviceInfo(dvt) as info:
            hardware = await info.hardware_information()  # type: ignore[no-untyped-call]
        cpu_count = int((hardware or {}).get("numberOfCpus", 1) or 1)
        tap = await Sysmontap.create(dvt, interval=500)
        rows: list[dict[str, Any]] = []

        async def until_ours() -> None:
            async with tap:
                async for entries in tap.iter_processes():
                    rows[:] = entries  # one sample's rows: never two samples summed
                    if any(r.get("name") == process for r in entries):
                        return

        # Silent, or no row of ours within the window: the caller says which.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until_ours(), timeout=window_s)
    return rows, cpu_count
