"""iOS: battery from the IORegistry and the app's CPU and memory from sysmontap, through
pymobiledevice3 (the ``ios`` extra, imported inside the calls).

- Battery: the diagnostics relay's IORegistry entry of class IOPMPowerSource
  (``DiagnosticsService.get_battery``): CurrentCapacity (percent on recent iOS; with
  MaxCapacity in mAh on old ones), InstantAmperage (mA, negative when discharging; some
  versions send it as an unsigned 64-bit number), Voltage (mV), Temperature (hundredths
  of °C), IsCharging, ExternalConnected.
- CPU and memory: one sysmontap window (DVT instruments) per reading, the app's row
  picked by process name. sysmontap can stay silent while XCUITest runs: a window with no
  process rows is a gap with that reason, not a hang and not a zero.

:func:`parse_battery` and :func:`parse_sysmontap` are pure and tested against recorded
dicts; the live calls need an iPhone (and, for sysmontap, the developer disk image or an
iOS 17+ tunnel), which the test machine does not have (docs/samplers.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from devicelab.errors import DeviceUnreachable, ToolMissing
from devicelab.samplers.base import Sampler
from devicelab.samplers.battery import BatteryReading
from devicelab.samplers.log import SampleLog
from devicelab.samplers.sample import Sample, gap

__all__ = [
    "SYSMONTAP_SILENT",
    "IosSampler",
    "parse_battery",
    "parse_sysmontap",
    "signed_milliamps",
]

SYSMONTAP_SILENT = (
    "sysmontap sent no process data (it stays silent while XCUITest runs: sample CPU and "
    "memory outside the UI test, or rely on the battery readings)"
)
_U64 = 1 << 64
_SYSMON_METRICS = ("cpu.app_pct", "memory.footprint_mb")


def signed_milliamps(value: Any) -> float | None:
    """InstantAmperage as a signed number of mA (an unsigned 64-bit encoding of a negative
    current is turned back into it); None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = int(value)
    if number >= 1 << 63:
        number -= _U64
    return float(number)


def parse_battery(entry: Mapping[str, Any]) -> BatteryReading:
    """The reading of an IOPMPowerSource / AppleSmartBattery IORegistry dict.

    CurrentCapacity is a percent when MaxCapacity is 100 or absent (recent iOS); when
    MaxCapacity is larger it is mAh and the level is their ratio. Raises ValueError when
    there is no CurrentCapacity.
    """
    current = entry.get("CurrentCapacity")
    if not isinstance(current, int | float):
        raise ValueError("no CurrentCapacity in the IORegistry battery entry")
    maximum = entry.get("MaxCapacity")
    level = float(current)
    if isinstance(maximum, int | float) and maximum > 100:
        level = round(100 * float(current) / float(maximum), 2)
    temperature = entry.get("Temperature")
    voltage = entry.get("Voltage")
    charging, external = entry.get("IsCharging"), entry.get("ExternalConnected")
    return BatteryReading(
        level_pct=level,
        current_ma=signed_milliamps(entry.get("InstantAmperage")),
        voltage_mv=float(voltage) if isinstance(voltage, int | float) else None,
        temperature_c=float(temperature) / 100 if isinstance(temperature, int | float) else None,
        charging=bool(charging) if isinstance(charging, bool) else None,
        plugged=bool(external) if isinstance(external, bool) else None,
    )


def parse_sysmontap(
    rows: Iterable[Mapping[str, Any]], process: str, cpu_count: int = 1
) -> tuple[float | None, float | None] | None:
    """(cpu %, footprint MB) of ``process`` over sysmontap's per-process rows (dicts with
    ``name``, ``cpuUsage`` in percent of one core, ``physFootprint`` in bytes, as
    ``Sysmontap.iter_processes`` yields them). CPU is divided by ``cpu_count`` (device
    share). Returns None when no row names ``process``."""
    for row in rows:
        if row.get("name") != process:
            continue
        cpu, footprint = row.get("cpuUsage"), row.get("physFootprint")
        return (
            round(float(cpu) / max(cpu_count, 1), 2) if isinstance(cpu, int | float) else None,
            round(float(footprint) / 1e6, 3) if isinstance(footprint, int | float) else None,
        )
    return None


class IosSampler(Sampler):
    """Battery (IORegistry) and, when ``process`` is given, that process's CPU and memory
    (sysmontap) of the iPhone ``udid``."""

    SOURCE = "pymobiledevice3"
    METRICS = ("battery.level_pct", "cpu.app_pct", "memory.footprint_mb")

    def __init__(
        self,
        log: SampleLog,
        udid: str,
        *,
        process: str | None = None,
        sysmontap_window_s: float = 3.0,
        usbmux_address: str | None = None,
    ) -> None:
        super().__init__(log)
        self.udid = udid
        self.process = process
        self.window_s = sysmontap_window_s
        self.usbmux_address = usbmux_address

    def _read(self, t: float) -> list[Sample]:
        battery, rows, cpu_count = _run(self._ask())
        samples = parse_battery(battery).samples(t, "ioregistry")
        if self.process is not None:
            samples += self._app(t, rows, cpu_count)
        return samples

    def _app(self, t: float, rows: list[dict[str, Any]], cpu_count: int) -> list[Sample]:
        """The app's CPU and memory samples, or gaps that say why there are none."""
        assert self.process is not None
        if not rows:
            return [gap(t, m, "sysmontap", SYSMONTAP_SILENT) for m in _SYSMON_METRICS]
        found = parse_sysmontap(rows, self.process, cpu_count)
        if found is None:
            note = f"{self.process} is not running"
            return [gap(t, m, "sysmontap", note) for m in _SYSMON_METRICS]
        units = {"cpu.app_pct": "%", "memory.footprint_mb": "MB"}
        return [
            Sample(t=t, metric=m, value=v, unit=units[m], source="sysmontap")
            for m, v in zip(_SYSMON_METRICS, found, strict=True)
            if v is not None
        ]

    async def _ask(self) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        try:
            from pymobiledevice3.exceptions import PyMobileDevice3Exception
            from pymobiledevice3.lockdown import create_using_usbmux
            from pymobiledevice3.services.diagnostics import DiagnosticsService
        except ImportError as exc:
            raise ToolMissing("pymobiledevice3", hint="pip install 'devicelab[ios]'") from exc
        try:
            lockdown = await create_using_usbmux(serial=self.udid,
                                                 usbmux_address=self.usbmux_address)  # fmt: skip
            async with DiagnosticsService(lockdown) as diagnostics:
                battery = await diagnostics.get_battery() or {}
            rows: list[dict[str, Any]] = []
            cpu_count = 1
            if self.process is not None:
                rows, cpu_count = await self._sysmontap(lockdown)
        except (PyMobileDevice3Exception, OSError) as exc:
            raise DeviceUnreachable(
                f"pymobiledevice3 could not read {self.udid}: {str(exc) or type(exc).__name__}",
                hint="unlock the iPhone, trust this computer; for CPU/memory mount the "
                "developer image (iOS 17+: start a tunnel)",
                serial=self.udid,
                command="pymobiledevice3 diagnostics battery single",
            ) from exc
        return dict(battery), rows, cpu_count

    async def _sysmontap(self, lockdown: Any) -> tuple[list[dict[str, Any]], int]:
        from pymobiledevice3.services.dvt.instruments.device_info import DeviceInfo
        from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider
        from pymobiledevice3.services.dvt.instruments.sysmontap import Sysmontap

        async with DvtProvider(lockdown) as dvt:
            async with DeviceInfo(dvt) as info:
                hardware = await info.hardware_information()  # type: ignore[no-untyped-call]
            cpu_count = int((hardware or {}).get("numberOfCpus", 1) or 1)
            tap = await Sysmontap.create(dvt, interval=500)
            rows: list[dict[str, Any]] = []

            async def first_rows() -> None:
                async with tap:
                    async for entries in tap.iter_processes():
                        rows.extend(entries)
                        if any(r.get("name") == self.process for r in entries):
                            return

            # Silent, or no row of ours within the window: the caller says which.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_rows(), timeout=self.window_s)
        return rows, cpu_count


def _run(work: Any) -> Any:
    """Run a coroutine to completion in a private event loop (the sampler's thread has none)."""
    return asyncio.run(asyncio.wait_for(work, timeout=60))
