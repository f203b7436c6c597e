"""Android: memory, CPU and battery of an app through adb (adbutils).

What one reading runs on the device (each an ``adb shell`` call):

- ``dumpsys meminfo <package>``: the App Summary's TOTAL PSS / TOTAL RSS / TOTAL SWAP PSS
  (Android 11+), or TOTAL / TOTAL SWAP PSS with no RSS (older). "No process found for:"
  -> gap samples, not an error.
- ``pidof <package>``, then ``cat /proc/stat /proc/<pid>/stat``: CPU from the deltas of
  the app's utime+stime and of the whole device's jiffies between two readings (the first
  reading has no CPU sample). Percentages are of the whole device (all cores = 100 %).
- ``dumpsys battery`` (level/scale, voltage mV, temperature in tenths of °C, Charge
  counter µAh, status; vendor lines ignored; the "(UPDATES STOPPED ...)" marker noted) and
  ``cat /sys/class/power_supply/battery/current_now`` when readable (µA on most kernels).

The parsers are pure functions of the command's text (tested against recorded outputs in
devicelab.testing.fake_adbd). :class:`BatteryUnplugged` simulates unplugging (``dumpsys
battery unplug``): a change to the device, journalled before it is made and reset on
exit; it is logical only (see docs/samplers.md). adbutils' errors are translated here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Self

from devicelab.errors import DeviceUnreachable, ProbeFailed
from devicelab.journal import Entry, Journal
from devicelab.samplers.base import HeldReader, Sampler
from devicelab.samplers.battery import BatteryReading
from devicelab.samplers.log import SampleLog
from devicelab.samplers.sample import METRICS, Sample, gap

__all__ = [
    "CURRENT_NOW",
    "UNDOERS",
    "UNPLUG_KIND",
    "AndroidSampler",
    "AppPss",
    "BatteryUnplugged",
    "CpuTicks",
    "MemInfo",
    "cpu_pct",
    "parse_battery",
    "parse_current_now",
    "parse_meminfo",
    "parse_pid_ticks",
    "parse_proc_stat",
]

logger = logging.getLogger("devicelab.samplers.android")

CURRENT_NOW = "/sys/class/power_supply/battery/current_now"
UNPLUG_KIND = "android.battery_unplug"
_KB = 1024 / 1e6  # dumpsys's KB are KiB; our MB are 10^6 bytes


# --- pure parsers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MemInfo:
    """The App Summary totals of ``dumpsys meminfo <package>``, in KB (KiB)."""

    pid: int | None
    pss_kb: int
    rss_kb: int | None
    swap_pss_kb: int | None


def parse_meminfo(text: str) -> MemInfo | None:
    """The totals of ``dumpsys meminfo <package>``; None when no process was found.

    Reads ``TOTAL PSS:`` / ``TOTAL RSS:`` / ``TOTAL SWAP PSS:`` (Android 11+) or
    ``TOTAL:`` / ``TOTAL SWAP PSS:`` (older, no RSS). Raises ValueError when the text has
    neither (not a meminfo output).
    """
    if "No process found for" in text:
        return None
    pid_match = re.search(r"\*\* MEMINFO in pid (\d+)", text)
    pid = int(pid_match.group(1)) if pid_match else None
    pss = re.search(r"TOTAL PSS:\s+(\d+)", text) or re.search(r"^\s*TOTAL:\s+(\d+)", text, re.M)
    if pss is None:
        raise ValueError("no TOTAL PSS / TOTAL line in the dumpsys meminfo output")
    rss = re.search(r"TOTAL RSS:\s+(\d+)", text)
    swap = re.search(r"TOTAL SWAP PSS:\s+(\d+)", text)
    return MemInfo(
        pid=pid,
        pss_kb=int(pss.group(1)),
        rss_kb=int(rss.group(1)) if rss else None,
        swap_pss_kb=int(swap.group(1)) if swap else None,
    )


def parse_battery(text: str) -> BatteryReading:
    """The reading of ``dumpsys battery``.

    Temperature is in tenths of °C, voltage in mV, ``Charge counter`` in µAh (absent on
    some devices). Vendor lines (Samsung's mSec..., LED ...; a second lower-case "charge
    counter") and log text after the block are ignored: the first occurrence of each
    AOSP key wins. Charging is ``status: 2`` (BATTERY_STATUS_CHARGING); plugged is any
    "... powered: true". Raises ValueError when there is no level.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key and key not in fields:
            fields[key] = value.strip()
    if "level" not in fields:
        raise ValueError("no level in the dumpsys battery output")

    def number(key: str) -> float | None:
        try:
            return float(fields[key])
        except (KeyError, ValueError):
            return None

    level, scale = number("level"), number("scale") or 100.0
    temperature, counter = number("temperature"), number("Charge counter")
    powered = [fields[k] for k in fields if k.endswith(" powered")]
    status = number("status")
    return BatteryReading(
        level_pct=None if level is None else round(level * 100 / scale, 2),
        voltage_mv=number("voltage"),
        temperature_c=None if temperature is None else temperature / 10,
        charging=None if status is None else status == 2,
        plugged=any(v == "true" for v in powered) if powered else None,
        charge_mah=None if counter is None else counter / 1000,
        updates_stopped="UPDATES STOPPED" in text,
    )


def parse_current_now(text: str) -> float | None:
    """``current_now`` in mA, or None when it is not a number (unreadable, "Permission
    denied"). Kernels report µA; values below 20,000 in magnitude are taken as already mA
    (some vendors). The sign is the kernel's: on many devices negative means discharging,
    on some it is the reverse (see docs/samplers.md)."""
    try:
        raw = float(text.strip().splitlines()[0])
    except (ValueError, IndexError):
        return None
    return raw / 1000 if abs(raw) >= 20_000 else raw


@dataclass(frozen=True)
class CpuTicks:
    """Jiffies: the whole device's (busy, total) and the app's utime+stime."""

    busy: int
    total: int
    app: int | None


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(busy, total) jiffies of the aggregate ``cpu`` line of /proc/stat (idle and iowait
    are not busy). Raises ValueError when there is no such line."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(x) for x in parts[1:]]
            # user nice system idle iowait irq softirq steal (guest is inside user)
            total = sum(values[:8])
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return total - idle, total
    raise ValueError("no aggregate cpu line in /proc/stat")


def parse_pid_ticks(text: str) -> int | None:
    """utime+stime (jiffies) of a /proc/<pid>/stat line, or None when absent. The command
    name in parentheses may hold spaces, so fields are counted after the last ')'."""
    for line in text.splitlines():
        if ") " in line and re.match(r"^\d+ \(", line):
            rest = line.rsplit(")", 1)[1].split()
            # rest[0] is field 3 (state): utime is field 14, stime field 15
            return int(rest[11]) + int(rest[12])
    return None


def cpu_pct(before: CpuTicks, after: CpuTicks) -> tuple[float | None, float | None]:
    """(app %, device busy %) of the whole device between two readings."""
    total = after.total - before.total
    if total <= 0:
        return None, None
    busy = round(100 * (after.busy - before.busy) / total, 2)
    if before.app is None or after.app is None or after.app < before.app:
        return None, busy  # the app restarted in between: no delta
    return round(100 * (after.app - before.app) / total, 2), busy


# --- the sampler ----------------------------------------------------------------------------
class AndroidSampler(Sampler):
    """Memory, CPU and battery of ``package`` on ``device`` (an adbutils AdbDevice)."""

    SOURCE = "adb"
    METRICS = ("memory.pss_mb", "cpu.app_pct", "battery.level_pct")

    def __init__(
        self,
        log: SampleLog,
        device: Any,
        package: str,
        *,
        battery: bool = True,
        current_path: str = CURRENT_NOW,
    ) -> None:
        super().__init__(log)
        self.device = device
        self.package = package
        self.battery = battery
        self.current_path = current_path
        self._ticks: CpuTicks | None = None

    @property
    def serial(self) -> str:
        """The device's serial."""
        return str(getattr(self.device, "serial", ""))

    def shell(self, command: str) -> str:
        """``adb shell command``; returns its output. Raises DeviceUnreachable."""
        import adbutils

        try:
            return str(self.device.shell(command, timeout=20))
        except (adbutils.AdbError, OSError) as exc:
            raise DeviceUnreachable(
                f"adb shell {command} failed on {self.serial}: {exc}",
                hint="check `adb devices`: is the phone still online and authorized?",
                serial=self.serial,
                command=f"adb shell {command}",
            ) from exc

    def _read(self, t: float) -> list[Sample]:
        samples = self._memory(t) + self._cpu(t)
        if self.battery:
            samples += self._battery(t)
        return samples

    def _memory(self, t: float) -> list[Sample]:
        source = "dumpsys meminfo"
        info = parse_meminfo(self.shell(f"dumpsys meminfo {self.package}"))
        if info is None:
            note = f"no process found for {self.package}"
            return [gap(t, "memory.pss_mb", source, note), gap(t, "memory.rss_mb", source, note)]
        values = {"memory.pss_mb": info.pss_kb, "memory.rss_mb": info.rss_kb,
                  "memory.swap_pss_mb": info.swap_pss_kb}  # fmt: skip
        return [
            Sample(t=t, metric=m, value=round(kb * _KB, 3), unit="MB", source=source)
            for m, kb in values.items()
            if kb is not None
        ]

    def _cpu(self, t: float) -> list[Sample]:
        source = "/proc/stat"
        pids = self.shell(f"pidof {self.package}").split()
        pid = pids[0] if pids and pids[0].isdigit() else None
        text = self.shell("cat /proc/stat" + (f" /proc/{pid}/stat" if pid else ""))
        busy, total = parse_proc_stat(text)
        ticks = CpuTicks(busy, total, parse_pid_ticks(text) if pid else None)
        before, self._ticks = self._ticks, ticks
        if before is None:
            return []  # a percentage needs two readings
        app, device_busy = cpu_pct(before, ticks)
        samples = []
        if app is None:
            samples.append(gap(t, "cpu.app_pct", source, f"{self.package} not running"))
        else:
            samples.append(Sample(t=t, metric="cpu.app_pct", value=app, unit="%", source=source))
        if device_busy is not None:
            samples.append(
                Sample(t=t, metric="cpu.total_pct", value=device_busy, unit="%", source=source)
            )
        return samples

    def _battery(self, t: float) -> list[Sample]:
        reading = parse_battery(self.shell("dumpsys battery"))
        samples = reading.samples(t, "dumpsys battery")
        current = parse_current_now(self.shell(f"cat {self.current_path} 2>/dev/null"))
        if current is not None:
            unit = METRICS["battery.current_ma"]
            samples.append(Sample(t=t, metric="battery.current_ma", value=current, unit=unit,
                                  source="current_now"))  # fmt: skip
        return samples


class AppPss(HeldReader):
    """The app's TOTAL PSS in MB on demand, for the memory checks (``dumpsys meminfo
    <package>`` through ``sampler``); each read is also written to the run's sample log.

    Calling it returns the MB; raises ProbeFailed when no process of the package is found,
    or when, inside a ``with`` block, the app's pid changed since the block's first read
    (the app restarted: an increase across two processes means nothing), and
    DeviceUnreachable when adb fails. ``with pss:`` also holds the background readings of
    ``sampler`` off until the block ends: ``dumpsys meminfo`` runs code inside the app's
    process, so only the check's own reads fall inside the window it measures.
    """

    NAME = "pss"
    HOW = (
        "dumpsys meminfo <package> TOTAL PSS of the app's process, before and after the "
        "load, with the data held by the app; the background sampler held off in between"
    )

    RESTART_HINT = "look for a crash or a low-memory kill in `adb logcat`"

    def __init__(self, sampler: AndroidSampler) -> None:
        super().__init__(sampler)
        self.sampler: AndroidSampler = sampler

    def __call__(self) -> float:
        package, source = self.sampler.package, "dumpsys meminfo"
        info = parse_meminfo(self.sampler.shell(f"dumpsys meminfo {package}"))
        if info is None:
            raise ProbeFailed(
                f"no process found for {package} on {self.sampler.serial}: its memory cannot "
                "be read",
                hint="is the inventory's app.id the package of the app in the session, and "
                "is the app still running?",
                command=f"adb shell dumpsys meminfo {package}",
            )
        self._same_app(package, info.pid)
        mb = round(info.pss_kb * _KB, 3)
        log = self.sampler.log
        log.write([Sample(t=log.now(), metric="memory.pss_mb", value=mb, unit="MB", source=source)])
        return mb


# --- the battery simulation (a change to the device) ----------------------------------------
def _reset_battery(serial: str) -> None:
    import adbutils

    from devicelab.platforms.android import AdbServer

    server = AdbServer()
    client = adbutils.AdbClient(host=server.host, port=server.port, socket_timeout=10)
    client.device(serial).shell("dumpsys battery reset", timeout=20)


def _undo_unplug(entry: Entry) -> None:
    _reset_battery(entry.target)


#: Journal undoers of this module (register them with the run's Journal for crash recovery).
UNDOERS = {UNPLUG_KIND: _undo_unplug}


class BatteryUnplugged:
    """``dumpsys battery unplug`` for the duration of a ``with`` block; ``dumpsys battery
    reset`` on exit (also on an exception or Ctrl-C, and at the next start after a crash
    through the journal's UNDOERS).

    Logical only: Android stops reporting the charger, but over USB the phone still
    charges; real drain needs the power cut (see docs/samplers.md).
    """

    def __init__(self, sampler: AndroidSampler, journal: Journal) -> None:
        self.sampler = sampler
        self.journal = journal
        self._entry: Entry | None = None

    def __enter__(self) -> Self:
        # Written (fsynced) before the change, so a crash in between is still undone.
        # "what": the words the lines on what a run left changed use (journal.describe).
        what = "battery reported unplugged (dumpsys battery unplug, until dumpsys battery reset)"
        data = {"command": "reset", "what": what}
        self._entry = self.journal.record(UNPLUG_KIND, self.sampler.serial, data)
        self.sampler.shell("dumpsys battery unplug")
        return self

    def __exit__(self, *exc: object) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        try:
            self.sampler.shell("dumpsys battery reset")
        except DeviceUnreachable as err:  # left pending: the next start tries again
            logger.warning("dumpsys battery reset failed on %s: %s", self.sampler.serial, err)
            return
        self.journal.mark_undone(entry)
