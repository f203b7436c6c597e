"""The lab inventory (inventory.yaml): the devices, how to reach them, how to power them."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AppBuild", "AppiumEndpoint", "Device", "Inventory", "Platform", "PowerControl"]

Platform = Literal["web", "android", "ios"]


class AppiumEndpoint(BaseModel):
    """An Appium server and the capabilities of a session on this device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Appium server URL, e.g. http://127.0.0.1:4723")
    capabilities: dict[str, Any] = Field(default_factory=dict, description="W3C capabilities")


class AppBuild(BaseModel):
    """The app under test: which build to install and how to name it on the device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Android package or iOS bundle id, e.g. app.messaging.test")
    path: str | None = Field(default=None, description="the .apk/.ipa/.app to install")
    version: str | None = None
    url: str | None = Field(default=None, description="web only: the app's URL")


class PowerControl(BaseModel):
    """How the lab cuts a device's power for a real battery drain run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["none", "uhubctl", "manual"] = "none"
    hub: str | None = Field(default=None, description="uhubctl hub location, e.g. 1-1")
    port: int | None = Field(default=None, ge=1, description="uhubctl port number")
    adb_wifi: str | None = Field(default=None, description="host:port for adb over Wi-Fi")

    @model_validator(mode="after")
    def _uhubctl(self) -> Self:
        if self.kind == "uhubctl" and (self.hub is None or self.port is None):
            raise ValueError("power kind uhubctl needs hub and port")
        return self


class Device(BaseModel):
    """One device of the lab.

    ``serial`` is the adb serial (android), ``udid`` the iOS UDID; a web device has
    neither and may name a ``browser`` executable.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = ""
    platform: Platform
    model: str
    os: str = Field(description="OS name and version, e.g. 'Android 13', 'iOS 17.5'")
    tier: Literal["desktop", "low-end", "mid-range", "high-end"] | None = None
    soc: str | None = None
    ram_gb: float | None = Field(default=None, gt=0)
    year: int | None = Field(default=None, ge=2007, le=2100)
    serial: str | None = None
    udid: str | None = None
    browser: str | None = Field(default=None, description="web: browser executable")
    appium: AppiumEndpoint | None = None
    app: AppBuild | None = None
    power: PowerControl = Field(default_factory=PowerControl)
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _identity(self) -> Self:
        if self.platform == "android" and not self.serial:
            raise ValueError("an android device needs serial (as `adb devices` prints it)")
        if self.platform == "ios" and not self.udid:
            raise ValueError("an ios device needs udid")
        if self.platform == "web" and (self.serial or self.udid):
            raise ValueError("a web device has no serial or udid")
        return self

    def summary(self) -> dict[str, str]:
        """The device as results.json names it: id, platform, model, os."""
        return {"id": self.id, "platform": self.platform, "model": self.model, "os": self.os}


class Inventory(BaseModel):
    """The whole of inventory.yaml: devices keyed by id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: dict[str, Device]

    @model_validator(mode="after")
    def _ids(self) -> Self:
        for key, device in self.devices.items():
            if device.id and device.id != key:
                raise ValueError(f"device {key!r} has id {device.id!r}; leave id out")
            object.__setattr__(device, "id", key)
        return self

    def ids(self) -> list[str]:
        """Every device id, in file order."""
        return list(self.devices)
