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
    server); ios: unknown until its platform module probes usbmuxd.
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


def device_states(inventory: Inventory) -> list[DeviceState]:
    """The state of every device of ``inventory``, in file order (the adb server is asked
    once, and only when the inventory has an android device)."""
    devices = list(inventory.devices.values())
    android = _android_states([d for d in devices if d.platform == "android"])
    by_id = {state.device.id: state for state in android}
    states = []
    for device in devices:
        if device.platform == "web":
            states.append(_web_state(device))
        elif device.platform == "android":
            states.append(by_id[device.id])
        else:
            states.append(
                DeviceState(device, "unknown", f"{device.platform} probing is not built yet")
            )
    return states
