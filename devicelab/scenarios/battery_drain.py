"""battery_drain: the story's "run app for 1 hour with active messaging, battery drop
target < 10% per hour".

For ``duration_s`` (default 3600 s, the story's hour) the app's normal messaging workload
goes on through the probes: A sends B a message, the conversation list loads, one search;
then a pause, as a user reads (a back-to-back probe loop would overstate the drain).
Every ``sample_every_s`` the battery is read through the run's android sampler (``dumpsys
battery`` level, ``current_now`` when readable), each reading into samples.jsonl at once.

The judged value is the drain in % per hour: minus the Theil-Sen slope of the level (the
median of every pairwise slope, robust to the level's integer steps).

**The power must be cut** (docs/samplers.md): ``dumpsys battery unplug`` is logical only
and over USB the phone still charges. The inventory's ``power`` decides:

- ``none``: the check skips, with that reason;
- ``manual``: the user cut it; devicelab still verifies the battery discharges: a first
  reading that says "charging" ends the check at once, and at the end the level must have
  fallen or the current flowed out (negative), and the level must not have risen by
  more than one 1 % step; otherwise the check is an ``error`` with
  :data:`STILL_CHARGING`. A battery at 0 % is an ``error`` with :data:`EMPTY`; one that
  reaches 0 % is judged on the readings up to it;
- ``uhubctl``: devicelab switches the hub port off (``uhubctl -l HUB -p PORT -a off``),
  journaled before it is made, and on again on exit, on an exception or Ctrl-C, and at
  the next start after a crash (:data:`UNDOERS`); then verifies as for ``manual``. adb
  must reach the phone without that port: over Wi-Fi (a ``host:port`` serial).

Shorter runs: ``DEVICELAB_BATTERY_DURATION_S`` (and ``DEVICELAB_BATTERY_SAMPLE_S``: at
least :data:`MIN_SAMPLE_S`, and the run two reading intervals long), or
``measure(ctx, power, DrainOptions(duration_s=240, sample_every_s=10))``.

A drain stopped before its end (Ctrl-C, SIGTERM, SIGHUP: a farm stopped in the morning)
raises :class:`DrainInterrupted`, a KeyboardInterrupt that carries the check of the
readings so far (an ``error``: it did not run its duration); the lab records it, then the
interrupt goes on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from devicelab.errors import BadInput, DeviceLabError, EnvironmentProblem, ToolMissing
from devicelab.journal import Entry, Journal
from devicelab.models import Check, PowerControl
from devicelab.samplers import Sample, least_squares_slope, theil_sen_slope
from devicelab.samplers.android import AndroidSampler, AppPss
from devicelab.samplers.base import Sampler
from devicelab.samplers.ios import IosSampler
from devicelab.scenarios.context import ScenarioContext, env_options, skipped
from devicelab.targets import judge, resolve

__all__ = [
    "CATEGORY",
    "CHECK_ID",
    "EMPTY",
    "MIN_SAMPLE_S",
    "NEEDS_POWER_CUT",
    "POWER_KIND",
    "STILL_CHARGING",
    "TITLE",
    "UNDOERS",
    "DrainInterrupted",
    "DrainOptions",
    "PowerCut",
    "measure",
    "run",
    "sampling_for",
]

CHECK_ID = "battery_drain"
TITLE = "Battery drain over 1 hour of active messaging"
CATEGORY = "battery"
UNIT = "pct_per_hour"
STILL_CHARGING = "the phone is still charging: cut the power"
EMPTY = (
    "the battery read 0 % throughout: the phone is about to shut down and a drain cannot be "
    "measured from an empty battery (charge it, then cut the power)"
)
#: How far the level may rise over a run and still be noise: one step of a level read in
#: whole percent (a fuel gauge that settles after the load drops).
_ONE_STEP_PCT = 1.0
NEEDS_POWER_CUT = (
    "real drain needs the power cut: `dumpsys battery unplug` is logical only and over USB "
    "the phone still charges (set the device's power in inventory.yaml: uhubctl with hub "
    "and port, or manual)"
)
POWER_KIND = "power.uhubctl_off"
UHUBCTL_HINT = "apt-get install uhubctl (it needs root or its udev rule to switch a port)"
OVER_USB = (
    "adb reaches the phone over USB, which the power cut takes away: connect it over Wi-Fi "
    "(`adb connect HOST:PORT`) and give that host:port as the device's serial"
)
IOS_OVER_USB = (
    "usbmuxd reaches the iPhone over USB only, which the power cut takes away: turn on "
    "Wi-Fi sync (Finder or `pymobiledevice3 lockdown wifi-connections on`) so usbmuxd also "
    "lists it over the network"
)
#: The shortest time between two battery readings: a shorter one reads the battery in a busy
#: loop (``1e-9``), and no fuel gauge reports that often.
MIN_SAMPLE_S = 0.1
_SAMPLE_VAR = "DEVICELAB_BATTERY_SAMPLE_S"
_DURATION_VAR = "DEVICELAB_BATTERY_DURATION_S"
_HOW = {
    "android": "dumpsys battery level (and current_now)",
    "ios": "IORegistry CurrentCapacity (and InstantAmperage) through lockdownd",
}

logger = logging.getLogger("devicelab.scenarios.battery_drain")


class DrainOptions(BaseModel):
    """How long the drain run lasts, how often it reads the battery, how the workload paces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Finite: an "inf" interval read the battery twice and judged that.
    duration_s: float = Field(
        3600.0, gt=0, allow_inf_nan=False, description="workload time (the story: 1 hour)"
    )
    sample_every_s: float = Field(
        60.0, ge=MIN_SAMPLE_S, allow_inf_nan=False, description="seconds between battery readings"
    )
    pause_s: float = Field(5.0, ge=0, description="idle seconds after each workload cycle")
    settle_s: float = Field(3.0, ge=0, description="wait after uhubctl cut the port's power")

    @classmethod
    def from_env(cls) -> DrainOptions:
        """Options with ``DEVICELAB_BATTERY_DURATION_S`` / ``DEVICELAB_BATTERY_SAMPLE_S``
        applied. Raises ConfigError for a duration that is not a number of seconds > 0,
        and BadInput (from :func:`sampling_for`) for an interval that is not one of
        :data:`MIN_SAMPLE_S` or more, or a duration shorter than two of them."""
        options = env_options(cls, {"duration_s": _DURATION_VAR}, "battery run")
        every = sampling_for(options.duration_s, _DURATION_VAR)
        return cls(duration_s=options.duration_s, sample_every_s=every)


def sampling_for(duration_s: float, duration_from: str = "--duration") -> float:
    """The seconds between the battery readings of a drain run ``duration_s`` long:
    ``DEVICELAB_BATTERY_SAMPLE_S`` when set, else DrainOptions' default. ``duration_from``
    names where the duration was given (the farm's ``--duration``, or the variable a single
    run reads), for the message. Raises BadInput for a value that is not a finite number
    of seconds > 0, one under :data:`MIN_SAMPLE_S`, and for a run shorter than two reading
    intervals (two readings a few seconds apart passed as a drain of 0 %/h)."""
    name = _SAMPLE_VAR
    text = os.environ.get(name, "").strip()
    default = DrainOptions.model_fields["sample_every_s"].default
    try:
        every = float(text) if text else default
    except ValueError:
        every = math.nan
    if not math.isfinite(every) or every <= 0:
        raise BadInput(
            f"{name}={text!r} is not a number of seconds > 0",
            hint=f"set {name} to the seconds between battery readings (e.g. 60), or unset it",
        )
    if every < MIN_SAMPLE_S:
        raise BadInput(
            f"{name}={text} is under {MIN_SAMPLE_S:g} s: it would read the battery in a busy loop",
            hint=f"set {name} to {MIN_SAMPLE_S:g} or more (e.g. 60), or unset it",
        )
    if duration_s < 2 * every:
        given = f"{name}={text}" if text else f"the default; {name} unset"
        flag = duration_from.startswith("--")
        what = f"duration {duration_s:g} s" if flag else f"{duration_from}={duration_s:g}"
        longer = f"a {duration_from}" if flag else duration_from
        raise BadInput(
            f"{what} is shorter than two battery reading intervals "
            f"(one every {every:g} s, {given}): a drain run is {2 * every:g} s at least",
            hint=f"{longer} of {2 * every:g} s or more, or {name} of {duration_s / 2:g} s or less",
        )
    return every


def _uhubctl(hub: str, port: int, action: str) -> None:
    """``uhubctl -l HUB -p PORT -a ACTION``. Raises ToolMissing, EnvironmentProblem."""
    program = shutil.which("uhubctl")
    if program is None:
        raise ToolMissing("uhubctl", hint=UHUBCTL_HINT)
    command = [program, "-l", hub, "-p", str(port), "-a", action]
    try:
        # A session of its own: a terminal's Ctrl-C goes to the run, which restores the
        # port, and never kills uhubctl half-way through switching it.
        subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            start_new_session=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        stderr = (getattr(exc, "stderr", None) or "").strip()
        raise EnvironmentProblem(
            f"uhubctl could not switch hub {hub} port {port} {action}: {stderr or exc}",
            hint="check the hub location and port with `uhubctl` (no arguments), and that "
            "this user may switch it (root or uhubctl's udev rule)",
        ) from exc


def _undo_cut(entry: Entry) -> None:
    _uhubctl(str(entry.data["hub"]), int(entry.data["port"]), "on")


#: Journal undoers of this module (register them with the run's Journal for crash recovery).
UNDOERS = {POWER_KIND: _undo_cut}


class PowerCut:
    """The device's hub port switched off (uhubctl) for the duration of a ``with`` block;
    on again on exit, on an exception or Ctrl-C, and at the next start after a crash (the
    change is journaled before it is made). Raises ToolMissing without uhubctl and
    EnvironmentProblem when it fails."""

    def __init__(self, power: PowerControl, serial: str, journal: Journal) -> None:
        assert power.hub is not None and power.port is not None  # PowerControl checks it
        self.hub, self.port = power.hub, power.port
        self.serial = serial
        self.journal = journal
        self._entry: Entry | None = None

    def __enter__(self) -> Self:
        if shutil.which("uhubctl") is None:  # before the journal: nothing to undo
            raise ToolMissing("uhubctl", hint=UHUBCTL_HINT)
        what = f"hub {self.hub} port {self.port} switched off (uhubctl)"
        data = {"hub": self.hub, "port": self.port, "what": what}
        self._entry = self.journal.record(POWER_KIND, self.serial, data)
        try:
            _uhubctl(self.hub, self.port, "off")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        with _signals_deferred():  # a second Ctrl-C must not leave the phone unpowered
            try:
                _uhubctl(self.hub, self.port, "on")
            except EnvironmentProblem as err:  # left pending: the next start tries again
                logger.warning("could not switch hub %s port %s on: %s", self.hub, self.port, err)
                return
            self.journal.mark_undone(entry)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held back (delivered when the block ends) in the main thread, so
    the restore it guards runs to its end (its uhubctl runs in a session of its own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def run(ctx: ScenarioContext, power: PowerControl | None = None) -> Check:
    """battery_drain with the options of the environment and the device's ``power``
    (None: unknown, as none); returns the check. Raises as :func:`measure` does."""
    return measure(ctx, power)


class DrainInterrupted(KeyboardInterrupt):
    """A Ctrl-C (or SIGTERM, SIGHUP) that stopped a drain before its end; ``check`` is
    the check of the readings taken so far (an ``error``: the drain did not run its
    duration, so it is not judged)."""

    def __init__(self, check: Check) -> None:
        super().__init__()
        self.check = check


def _cycle(ctx: ScenarioContext) -> None:
    timeout = ctx.options.probe_timeout_s
    ctx.harness.run("message_delivery", {"conversationId": ctx.conversation_id, "count": 1,
                                         "intervalMs": 250}, timeout_s=timeout)  # fmt: skip
    ctx.harness.run("conversation_list", {"count": 1, "limit": 50}, timeout_s=timeout)
    terms = ctx.search_terms[:1] or ["test query"]
    ctx.harness.run("message_search", {"count": 1, "terms": terms}, timeout_s=timeout)


def _battery(sampler: Sampler) -> dict[str, Sample]:
    """One reading through the sampler (into its log); its battery samples by metric."""
    return {s.metric: s for s in sampler.read_once() if s.metric.startswith("battery.")}


def _not_charging(evidence: dict[str, object]) -> Check:
    return Check(id=CHECK_ID, title=TITLE, category=CATEGORY, status="error",
                 reason=STILL_CHARGING, evidence=evidence)  # fmt: skip


def measure(
    ctx: ScenarioContext,
    power: PowerControl | None,
    options: DrainOptions | None = None,
    sampler: Sampler | None = None,
    journal: Journal | None = None,
) -> Check:
    """Keep the workload going for ``options.duration_s`` on a phone whose power is cut,
    reading the battery through ``sampler`` (default: the run's ``ctx.battery``, or on
    android the one behind ``ctx.heap_mb``); ``options`` None: DrainOptions.from_env(),
    read only when the check runs (a skip refuses none of them).
    The uhubctl power cut is journaled in ``journal`` (default: the state folder's).
    Returns the judged check (value: % per hour), a skip when the power is not cut by
    the inventory, or an error when the battery does not discharge (or is empty: 0 %
    throughout). Raises ProbeFailed
    when a probe fails, DeviceUnreachable when adb does, ToolMissing without uhubctl,
    BadInput for options of the environment it refuses, and DrainInterrupted (a
    KeyboardInterrupt with the check so far) when stopped during the drain."""
    if ctx.platform not in _HOW:
        why = f"not built yet: the battery drain run of {ctx.platform} devices"
        return skipped(CHECK_ID, TITLE, CATEGORY, why)
    kind = power.kind if power is not None else "none"
    if kind == "none":
        return skipped(CHECK_ID, TITLE, CATEGORY, NEEDS_POWER_CUT)
    if options is None:
        options = DrainOptions.from_env()
    if sampler is None:
        sampler = ctx.battery
    if sampler is None and isinstance(ctx.heap_mb, AppPss):
        sampler = ctx.heap_mb.sampler
    if sampler is None:
        why = "not built yet: a battery reader without the app's package"
        return skipped(CHECK_ID, TITLE, CATEGORY, why)
    if power is None or power.kind != "uhubctl":
        return _drain(ctx, kind, options, sampler)
    target, over_usb = _off_usb(sampler)
    if over_usb:
        evidence = {"power": kind, "serial": target}
        return Check(id=CHECK_ID, title=TITLE, category=CATEGORY, status="error",
                     reason=over_usb, evidence=evidence)  # fmt: skip
    with PowerCut(power, target, journal or Journal(undoers=UNDOERS)):
        ctx.say(f"battery_drain: hub {power.hub} port {power.port} switched off (uhubctl)")
        time.sleep(options.settle_s)
        return _drain(ctx, kind, options, sampler)


def _off_usb(sampler: Sampler) -> tuple[str, str]:
    """(the phone's serial or UDID, why it cannot be read once its USB port is off: ""
    when it can: adb over Wi-Fi, an iPhone usbmuxd also lists over the network)."""
    if isinstance(sampler, AndroidSampler):
        return sampler.serial, "" if ":" in sampler.serial else OVER_USB
    if isinstance(sampler, IosSampler):
        from devicelab.platforms.ios import Usbmuxd, listing_of

        listing = listing_of(sampler.udid, Usbmuxd(sampler.usbmux_address).states())
        wifi = listing is not None and "Network" in listing.connections
        return sampler.udid, "" if wifi else IOS_OVER_USB
    return "", "not built yet: a power cut for this battery reader"


def _drain(ctx: ScenarioContext, kind: str, options: DrainOptions, sampler: Sampler) -> Check:
    first = _battery(sampler)
    charging = first.get("battery.charging")
    if charging is not None and charging.value == 1:
        return _not_charging({"power": kind, "first_reading": "status: charging"})
    current = first.get("battery.current_ma")
    if current is not None and current.value is not None and current.value > 0:
        # On external power (a charger, a hub port still on) at 100 % the status reads
        # "full", not charging: the current says it, before an hour is spent on it.
        return _not_charging(
            {"power": kind, "first_reading": f"current {current.value:+g} mA into the battery"}
        )
    ctx.say(f"battery_drain: messaging for {options.duration_s:g} s on battery ({kind} power cut)")
    readings = [first]
    started = time.monotonic()
    due = started + options.sample_every_s
    cycles = 0
    try:
        while time.monotonic() - started < options.duration_s:
            _cycle(ctx)
            cycles += 1
            end = min(started + options.duration_s, time.monotonic() + options.pause_s)
            while (now := time.monotonic()) < end:
                if now >= due:
                    readings.append(_battery(sampler))
                    due = time.monotonic() + options.sample_every_s
                time.sleep(min(0.1, max(0.0, end - now)))
            if time.monotonic() >= due:
                readings.append(_battery(sampler))
                due = time.monotonic() + options.sample_every_s
        readings.append(_battery(sampler))
    except DeviceLabError as exc:
        # The phone gone (or a probe failing) an hour in: the error, with what was read
        # before it, not an empty check.
        check = _judged(ctx, kind, options, readings, cycles)
        so_far = f" (drain so far {check.value:g} %/h)" if check.value is not None else ""
        return check.model_copy(
            update={
                "status": "error",
                "target": None,
                "reason": f"{exc.one_line()}; {len(readings)} battery readings before it{so_far}",
            }
        )
    except KeyboardInterrupt as stop:
        # A farm stopped in the morning after hours of readings: they are the check, not
        # only lines in samples.jsonl. The interrupt goes on (exit 130, 143, 129).
        raise DrainInterrupted(_interrupted(ctx, kind, options, readings, cycles)) from stop
    return _judged(ctx, kind, options, readings, cycles)


def _interrupted(
    ctx: ScenarioContext,
    kind: str,
    options: DrainOptions,
    readings: list[dict[str, Sample]],
    cycles: int,
) -> Check:
    """The check of a drain stopped before its end: an ``error`` (it did not run its
    duration) with the drain of the readings so far as its value, when they give one."""
    check = _judged(ctx, kind, options, readings, cycles)
    taken, span = check.evidence["readings"], check.evidence["duration_s"]
    if taken < 2 or span <= 0:
        reason = f"interrupted before two battery readings ({taken} taken)"
    else:
        over = f"{span:g} s" if span < 120 else f"{span / 60:.1f} min"
        reason = f"interrupted after {taken} battery readings over {over}"
        if check.value is not None:
            reason += f" (drain so far {check.value:g} %/h)"
        elif check.reason:  # still charging, an empty battery: the readings say it
            reason += f"; {check.reason}"
    return check.model_copy(update={"status": "error", "target": None, "reason": reason})


def _judged(
    ctx: ScenarioContext,
    kind: str,
    options: DrainOptions,
    readings: list[dict[str, Sample]],
    cycles: int,
) -> Check:
    levels = [r["battery.level_pct"] for r in readings if "battery.level_pct" in r]
    t = [s.t for s in levels if s.value is not None]
    v = [s.value for s in levels if s.value is not None]
    currents = [r["battery.current_ma"].value for r in readings if "battery.current_ma" in r]
    current = [c for c in currents if c is not None]
    median_ma = statistics.median(current) if current else None
    evidence: dict[str, object] = {
        "power": kind,
        "level_first_pct": v[0] if v else None,
        "level_last_pct": v[-1] if v else None,
        "current_median_ma": median_ma,
        "readings": len(v),
        "cycles": cycles,
        "duration_s": round(t[-1] - t[0], 1) if t else 0.0,
        "series": "battery.level_pct",
        "workload": "per cycle: A sends B one message, the conversation list (50), one "
        f"search, then {options.pause_s:g} s idle",
        "how": f"{_HOW.get(ctx.platform, 'battery level')} every "
        f"{options.sample_every_s:g} s on battery; % per hour = minus the Theil-Sen slope "
        "of the level",
    }
    if len(set(t)) < 2:  # no slope without two instants
        why = "fewer than two battery levels were read"
        return Check(id=CHECK_ID, title=TITLE, category=CATEGORY, status="error", reason=why,
                     evidence=evidence)  # fmt: skip
    fell = v[-1] < v[0]
    # The current decides when it is read: a level that falls while current flows in is a
    # phone on a charger too weak for its load, not a battery drain (REFERENCE: real drain
    # needs a check that current flows out of the battery).
    if median_ma is not None and median_ma >= 0:
        return _not_charging(evidence)
    if not fell and median_ma is None:
        return _not_charging(evidence)
    emptied = v[-1] <= 0
    if emptied:  # flat at 0 % after that: it would pull the slope towards no drain at all
        end = next(i for i, level in enumerate(v) if level <= 0) + 1
        t, v = t[:end], v[:end]
        evidence["readings_judged"] = len(v)
    if len(v) < 2:  # 0 % from the first reading
        return Check(id=CHECK_ID, title=TITLE, category=CATEGORY, status="error",
                     reason=EMPTY, evidence=evidence)  # fmt: skip
    slope = theil_sen_slope(t, v)
    # A level that rises is charging, whatever the current says (a reader that gets its
    # sign wrong, a charger the status does not show): its "drain" is negative and passed.
    if (rise := slope * (t[-1] - t[0])) > _ONE_STEP_PCT:
        evidence["level_rise_pct"] = round(rise, 2)
        return _not_charging(evidence)
    # "or 0.0": a flat level is a drain of 0.0, not the -0.0 of minus a zero slope.
    drain = round(-slope * 3600, 3) or 0.0
    evidence["least_squares_pct_per_hour"] = round(-least_squares_slope(t, v) * 3600, 3) or 0.0
    target = resolve(ctx.book, CHECK_ID, ctx.platform, ctx.column)
    check = judge(check=CHECK_ID, title=TITLE, category=CATEGORY, target=target, value=drain,
                  unit=UNIT, stat="value", column=ctx.column, evidence=evidence)  # fmt: skip
    if options.duration_s < 3600 and check.status in ("pass", "fail"):
        check.reason += f"; a shortened run ({options.duration_s:g} s, the story's is 3600 s)"
    if emptied and check.status in ("pass", "fail"):
        check.reason += "; the level reached 0 %: judged on the readings up to it"
    elif drain < 0 and check.status in ("pass", "fail"):
        check.reason += "; the level did not fall over the run (it rose within one 1 % step)"
    if median_ma is None and check.status in ("pass", "fail"):
        check.reason += (
            "; the battery current could not be read, so that current flows out of the "
            "battery (the power really cut) is not verified"
        )
    return check
