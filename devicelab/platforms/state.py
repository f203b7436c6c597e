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

    ``state``: ready | missing (web: the browser is not installed) | unknown (android and
    ios until their platform modules probe adb and usbmuxd).
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


def device_states(inventory: Inventory) -> list[DeviceState]:
    """The state of every device of ``inventory``, in file order."""
    states = []
    for device in inventory.devices.values():
        if device.platform == "web":
            states.append(_web_state(device))
        else:
            states.append(
                DeviceState(device, "unknown", f"{device.platform} probing is not built yet")
            )
    return states
