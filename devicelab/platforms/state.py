"""The live state of each device of the inventory, as ``devicelab devices`` shows it, with
what devicelab runs that died left changed on it (from the journal)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from devicelab.journal import Entry
from devicelab.models import Device, Inventory

logger = logging.getLogger("devicelab.platforms.state")

__all__ = ["DeviceState", "device_states"]


@dataclass(frozen=True)
class DeviceState:
    """A device and what we know of it right now.

    ``state``: web: ready | missing (the browser is not installed); android: online |
    offline | unauthorized | no-permissions | absent (not attached) | unknown (no adb
    server); ios: online (listed by usbmuxd and paired) | unpaired (listed, no pair
    record: tap Trust) | absent (not listed) | unknown (no usbmuxd answers).

    ``left_changed``: what devicelab runs that died (killed, crashed) changed on the device
    and did not undo (pending in the journal; the next run on it puts that back).
    """

    device: Device
    state: str
    detail: str
    left_changed: list[Entry] = field(default_factory=list)

    def left_line(self) -> str:
        """One line on what dead runs left changed ("" when nothing is)."""
        if not self.left_changed:
            return ""
        from devicelab.journal import describe

        pids = ", ".join(str(p) for p in dict.fromkeys(e.pid for e in self.left_changed))
        return (
            f"left changed by a devicelab run that ended without putting it back (pid {pids}): "
            f"{describe(self.left_changed)}; the next devicelab run on it puts that back"
        )

    def as_dict(self) -> dict[str, object]:
        """The device summary plus state and detail, and ``left_changed`` (each change a
        dead run left: what, kind, pid, at), for ``--json``."""
        left = [
            {"what": str(e.data.get("what") or e.kind), "kind": e.kind, "pid": e.pid, "at": e.at}
            for e in self.left_changed
        ]
        return {
            **self.device.summary(),
            "state": self.state,
            "detail": self.detail,
            "left_changed": left,
        }


def _web_state(device: Device) -> DeviceState:
    browser = device.browser or "chromium"
    path = shutil.which(browser) or (browser if Path(browser).is_file() else None)
    if path:
        return DeviceState(device, "ready", path)
    return DeviceState(device, "missing", f"{browser} not found: apt-get install -y chromium")


def _android_states(devices: list[Device]) -> list[DeviceState]:
    if not devices:
        return []
    from devicelab.errors import EnvironmentProblem
    from devicelab.platforms.android import AdbServer, describe

    try:
        listed = AdbServer().states()
    except EnvironmentProblem as exc:
        return [DeviceState(d, "unknown", exc.one_line()) for d in devices]
    return [DeviceState(d, *describe(d.serial or "", listed)) for d in devices]


def _ios_states(devices: list[Device]) -> list[DeviceState]:
    if not devices:
        return []
    from devicelab.errors import EnvironmentProblem
    from devicelab.platforms.ios import Usbmuxd, describe

    try:
        listed = Usbmuxd().states()
    except EnvironmentProblem as exc:
        return [DeviceState(d, "unknown", exc.one_line()) for d in devices]
    return [DeviceState(d, *describe(d.udid or "", listed)) for d in devices]


def device_states(inventory: Inventory) -> list[DeviceState]:
    """The state of every device of ``inventory``, in file order (the adb server and
    usbmuxd are each asked once, and only when the inventory has a device of theirs)."""
    devices = list(inventory.devices.values())
    android = _android_states([d for d in devices if d.platform == "android"])
    ios = _ios_states([d for d in devices if d.platform == "ios"])
    left = _left_by_dead_runs()
    by_id = {
        state.device.id: replace(state, left_changed=left.get(state.device.serial or "", []))
        for state in android
    }
    by_id.update(
        {
            state.device.id: replace(state, left_changed=left.get(state.device.udid or "", []))
            for state in ios
        }
    )
    return [_web_state(d) if d.platform == "web" else by_id[d.id] for d in devices]


def _left_by_dead_runs() -> dict[str, list[Entry]]:
    """Pending journal changes of runs no longer alive, by device serial or udid ({} when the
    journal cannot be read: the listing still shows the states)."""
    from devicelab.errors import EnvironmentProblem
    from devicelab.journal import Journal

    try:
        entries = Journal().dead_runs_left()
    except EnvironmentProblem as exc:
        logger.warning("could not read the journal: %s", exc.one_line())
        return {}
    found: dict[str, list[Entry]] = {}
    for entry in entries:
        found.setdefault(entry.target, []).append(entry)
    return found
