"""The live state of each device of the inventory, as ``devicelab devices`` shows it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from devicelab.models import Device, Inventory

__all__ = ["DeviceState", "device_states"]


@dataclass(frozen=True)
class DeviceState:
    """A device and what we know of it right now.

    ``state``: web: ready | missing (the browser is not installed); android: online |
    offline | unauthorized | no-permissions | absent (not attached) | unknown (no adb
    server); ios: online (listed by usbmuxd and paired) | unpaired (listed, no pair
    record: tap Trust) | absent (not listed) | unknown (no usbmuxd answers).
    """

    device: Device
    state: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        """The device summary plus state and detail, for ``--json``."""
        return {**self.device.summary(), "state": self.state, "detail": self.detail}


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
    by_id = {state.device.id: state for state in [*android, *ios]}
    return [_web_state(d) if d.platform == "web" else by_id[d.id] for d in devices]
