"""iOS: the battery from the IORegistry and the app's CPU and memory from sysmontap,
through pymobiledevice3 (the ``ios`` extra, imported inside the calls).

- Battery: the diagnostics relay's IORegistry entry of class IOPMPowerSource
  (``DiagnosticsService.get_battery``): CurrentCapacity (percent on recent iOS; with
  MaxCapacity in mAh on old ones), InstantAmperage (mA, negative when discharging; some
  versions send it as an unsigned 64-bit number), Voltage (mV), Temperature (hundredths
  of °C), IsCharging, ExternalConnected.
- CPU and memory: one sysmontap window (DVT instruments) per reading, the app's row and
  its WebKit processes' rows (:mod:`devicelab.samplers.ios_sysmon`). When the
  instruments cannot be reached (no developer image, no iOS 17 tunnel) or sysmontap
  stays silent, the app's metrics are gaps that say why, and the battery is still read.

Tested end to end against devicelab.testing.fake_usbmuxd's phones (pairing session,
diagnostics relay, DTX instruments server); docs/samplers.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devicelab.errors import DeviceUnreachable, ProbeFailed, ToolMissing
from devicelab.platforms.ios import open_lockdown, run_private
from devicelab.samplers.base import HeldReader, Sampler
from devicelab.samplers.battery import BatteryReading
from devicelab.samplers.ios_sysmon import SYSMONTAP_SILENT, AppUsage, app_usage, read_processes
from devicelab.samplers.log import SampleLog
from devicelab.samplers.sample import METRICS, Sample, gap

__all__ = [
    "SYSMONTAP_SILENT",
    "AppFootprint",
    "IosSampler",
    "parse_battery",
    "signed_milliamps",
]

_U64 = 1 << 64
#: One visit to the phone: a pairing session, the battery, a sysmontap window.
_VISIT_TIMEOUT_S = 60.0
_SYSMON_METRICS = ("cpu.app_pct", "memory.footprint_mb")
# The instruments' own error: most often the path to them (disk image, tunnel) is not set up.
_INSTRUMENTS_HINT = (
    "unlock the iPhone and run again; if it persists, set up the instruments' path "
    "(docs/ios.md, 'CPU and memory': the disk image on iOS 14-16, tunneld on 17+)"
)


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


@dataclass
class _Reading:
    """What one visit to the phone brought: the battery entry (None when not asked), the
    sysmontap rows and core count, or why the app's rows could not be read (the gaps'
    note) and the error that says so, with its hint."""

    battery: dict[str, Any] | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    cpu_count: int = 1
    unavailable: str | None = None
    unreachable: DeviceUnreachable | None = None


class IosSampler(Sampler):
    """Battery (IORegistry) and, when ``process`` is given, that app's CPU and memory
    (sysmontap, with the WebKit processes working for it) of the iPhone ``udid``.

    ``usage`` is the app's usage at the last reading that found it (None before).
    """

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
        self.usage: AppUsage | None = None

    def _read(self, t: float) -> list[Sample]:
        reading = run_private(self._ask, _VISIT_TIMEOUT_S)
        assert reading.battery is not None
        samples = parse_battery(reading.battery).samples(t, "ioregistry")
        if self.process is not None:
            samples += self._app(t, reading)[0]
        return samples

    def _app(self, t: float, reading: _Reading) -> tuple[list[Sample], str | None]:
        """The app's CPU and memory samples, or gaps and the reason why there are none."""
        assert self.process is not None
        why = reading.unavailable
        if why is None and not reading.rows:
            why = SYSMONTAP_SILENT
        usage = None
        if why is None:
            usage = app_usage(reading.rows, self.process, reading.cpu_count)
            if usage is None:
                why = (
                    f"no process named {self.process} on {self.udid} (is the app running, and "
                    "is the inventory's app.process its executable?)"
                )
        if usage is None:
            return [gap(t, m, "sysmontap", why or "") for m in _SYSMON_METRICS], why
        self.usage = usage
        values = {"cpu.app_pct": usage.cpu_pct, "memory.footprint_mb": usage.footprint_mb}
        samples = [
            Sample(t=t, metric=m, value=v, unit=METRICS[m], source="sysmontap")
            for m, v in values.items()
            if v is not None
        ]
        return samples, None

    def read_app(self) -> AppUsage:
        """Read the app's usage now (no battery), write its samples to the log; returns it.
        Raises DeviceUnreachable (the phone, or its instruments, cannot be reached: the
        hint says what to do) or ProbeFailed (sysmontap silent, or the app not running)."""
        assert self.process is not None, "read_app needs the app's process name"
        reading = run_private(lambda: self._ask(battery=False), _VISIT_TIMEOUT_S)
        t = self.log.now()
        samples, why = self._app(t, reading)
        self.log.write(samples)
        if why is not None:
            if reading.unreachable is not None:
                raise reading.unreachable
            raise ProbeFailed(why, hint="see docs/ios.md, 'CPU and memory'")
        assert self.usage is not None
        return self.usage

    async def _ask(self, *, battery: bool = True) -> _Reading:
        try:
            from pymobiledevice3.dtx import DTXNsError
            from pymobiledevice3.exceptions import PyMobileDevice3Exception
            from pymobiledevice3.services.diagnostics import DiagnosticsService
        except ImportError as exc:
            raise ToolMissing("pymobiledevice3", hint="pip install 'devicelab[ios]'") from exc
        try:
            lockdown = await open_lockdown(self.udid, self.usbmux_address)
        except (PyMobileDevice3Exception, OSError) as exc:
            raise self._unreachable(exc) from exc
        async with lockdown:  # the session's connection is closed after each visit
            reading = _Reading(battery=None)
            if battery:
                try:
                    async with DiagnosticsService(lockdown) as diagnostics:
                        reading.battery = dict(await diagnostics.get_battery() or {})
                except (PyMobileDevice3Exception, OSError) as exc:
                    raise self._unreachable(exc) from exc
            if self.process is None:
                return reading
            # The battery stays read when the instruments cannot be: their part is a gap.
            try:
                reading.rows, reading.cpu_count = await read_processes(
                    lockdown, self.udid, self.process, self.window_s
                )
            except DeviceUnreachable as exc:
                reading.unavailable = f"{exc}: {exc.hint}" if exc.hint else str(exc)
                reading.unreachable = exc
            except (PyMobileDevice3Exception, DTXNsError, OSError, TypeError, ValueError) as exc:
                # DTXNsError: the server's own error; TypeError / ValueError: rows that do
                # not match the attributes asked for.
                why = str(exc) or type(exc).__name__
                reading.unavailable = f"the instruments server of {self.udid} failed: {why}"
                reading.unreachable = DeviceUnreachable(
                    reading.unavailable, hint=_INSTRUMENTS_HINT, serial=self.udid
                )
            return reading

    def _unreachable(self, exc: BaseException) -> DeviceUnreachable:
        from pymobiledevice3 import exceptions as pmd3

        why = str(exc) or type(exc).__name__
        if isinstance(exc, pmd3.DeviceNotFoundError | pmd3.NoDeviceConnectedError):
            # A phone unplugged mid-run: "trust this computer" sent people to the wrong fix.
            message = f"usbmuxd no longer lists {self.udid}: it was unplugged or left Wi-Fi"
            hint = "plug the iPhone back in (or onto the Wi-Fi); see `pymobiledevice3 usbmux list`"
        elif isinstance(exc, pmd3.PairingError | pmd3.NotPairedError | pmd3.MissingValueError):
            # MissingValueError: usbmuxd holds no pair record for it ("No such value.").
            message = f"{self.udid} does not trust this computer ({why})"
            hint = "unlock the iPhone and trust this computer (`pymobiledevice3 lockdown pair`)"
        elif isinstance(exc, ConnectionError | pmd3.ConnectionTerminatedError):
            message = f"the connection to {self.udid} dropped: {why}"
            hint = "check its cable (or Wi-Fi sync) and `pymobiledevice3 usbmux list`"
        else:
            message = f"pymobiledevice3 could not read {self.udid}: {why}"
            hint = "unlock the iPhone and check `pymobiledevice3 usbmux list`"
        return DeviceUnreachable(
            message,
            hint=hint,
            serial=self.udid,
            command="pymobiledevice3 diagnostics battery single",
        )


class AppFootprint(HeldReader):
    """The app's footprint in MB on demand, for the memory checks (sysmontap through
    ``sampler``, whose ``process`` must be set); each read is also written to the run's
    sample log.

    Calling it returns the MB; raises as :meth:`IosSampler.read_app`, and ProbeFailed
    when, inside a ``with`` block, the app's pid changed since the block's first read (the
    app restarted: an increase across two processes means nothing). ``with footprint:``
    holds the background readings of ``sampler`` off until the block ends, so only the
    check's own reads fall inside the window it measures.
    """

    NAME = "footprint"
    HOW = (
        "sysmontap physFootprint of the app's process and the WebKit processes it is "
        "responsible for (WebContent, Networking, GPU), before and after the load, with the "
        "data held by the app; the background sampler held off in between"
    )

    RESTART_HINT = (
        "look for a crash or a jetsam kill in the device's logs (pymobiledevice3 crash ls)"
    )
    # How memory_leak uses it (devicelab.scenarios.memory_leak): its readings are the
    # footprint series the sampler writes; the background sampler waits for the whole run;
    # the garbage is collected by Appium before each script call (safariGarbageCollect).
    SOURCE = "sysmontap"
    LEAK_SERIES = "memory.footprint_mb"
    LEAK_HOW = (
        "sysmontap physFootprint of the app and the WebKit processes it is responsible for, "
        "each reading right after a script call that Appium precedes with Web Inspector's "
        "full garbage collection (appium:safariGarbageCollect)"
    )
    VIA_SAMPLER = True
    GC_BY_SCRIPT = True

    def __init__(self, sampler: IosSampler) -> None:
        super().__init__(sampler)
        self.sampler: IosSampler = sampler

    def __call__(self) -> float:
        usage = self.sampler.read_app()
        if usage.footprint_mb is None:
            raise ProbeFailed(
                f"sysmontap gave no physFootprint for {self.sampler.process}",
                hint="see docs/ios.md, 'CPU and memory'",
            )
        self._same_app(str(self.sampler.process), usage.pid)
        return usage.footprint_mb
