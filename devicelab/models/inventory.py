"""The lab inventory (inventory.yaml): the devices, how to reach them, how to power them."""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from devicelab.models.numeric import FiniteFloat, WholeNumber

__all__ = [
    "LOCATED",
    "AppBuild",
    "AppiumEndpoint",
    "Device",
    "DeviceProxy",
    "Inventory",
    "Platform",
    "PowerControl",
]

Platform = Literal["web", "android", "ios"]

#: The error type of a rule that names the field it refuses: its context holds that field's
#: path from the model (``at``), the entry it clashes with (``other``) and a ``hint``;
#: devicelab.config reports it at that field's line.
LOCATED = "located"


def _refuse(
    message: str, at: tuple[str, ...], hint: str, other: tuple[str, ...] | None = None
) -> PydanticCustomError:
    """The error of a rule that names the field it refuses (see LOCATED)."""
    context: dict[str, Any] = {"message": message, "at": at, "hint": hint}
    if other is not None:
        context["other"] = other
    return PydanticCustomError(LOCATED, "{message}", context)


class AppiumEndpoint(BaseModel):
    """An Appium server and the capabilities of a session on this device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Appium server URL, e.g. http://127.0.0.1:4723")
    capabilities: dict[str, Any] = Field(default_factory=dict, description="W3C capabilities")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        # Without a scheme (127.0.0.1:4723) the URL was taken, and the session failed later
        # with the WebDriver client's own words. A cloud grid's user:password is not shown.
        shown = f"***@{value.rpartition('@')[2]}" if "@" in value else value
        parts = urllib.parse.urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not one
        except ValueError:
            raise _refuse(
                f"{shown!r} has no valid port", (), "e.g. http://127.0.0.1:4723"
            ) from None
        if parts.scheme in ("http", "https") and parts.hostname:
            return value
        if "://" not in value:
            raise _refuse(
                f"{shown!r} has no scheme (http:// or https://)", (), f"write it as http://{shown}"
            )
        raise _refuse(
            f"{shown!r} is not an http:// or https:// URL with a host",
            (),
            "e.g. http://127.0.0.1:4723, or https://host for a cloud grid",
        )


class AppBuild(BaseModel):
    """The app under test: which build to install and how to name it on the device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Android package or iOS bundle id, e.g. app.messaging.test")
    path: str | None = Field(default=None, description="the .apk/.ipa/.app to install")
    version: str | None = None
    url: str | None = Field(default=None, description="web only: the app's URL")
    process: str | None = Field(
        default=None,
        description="ios: the app's executable as sysmontap names its process "
        "(CFBundleExecutable; default App, the executable of a Capacitor iOS project)",
    )


class PowerControl(BaseModel):
    """How the lab cuts a device's power for a real battery drain run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["none", "uhubctl", "manual"] = "none"
    hub: str | None = Field(default=None, description="uhubctl hub location, e.g. 1-1")
    port: WholeNumber | None = Field(default=None, ge=1, description="uhubctl port number")
    adb_wifi: str | None = Field(default=None, description="host:port for adb over Wi-Fi")

    @model_validator(mode="after")
    def _uhubctl(self) -> Self:
        if self.kind == "uhubctl" and (self.hub is None or self.port is None):
            raise ValueError("power kind uhubctl needs hub and port")
        return self


class DeviceProxy(BaseModel):
    """Where the run's shaped proxy listens for a phone that reaches it over the network
    (an iPhone's manual Wi-Fi proxy names this address), and which clients it accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = Field(
        description="HOST:PORT set as the phone's Wi-Fi proxy: this machine's address on "
        "the phone's network and a fixed port, e.g. 192.168.50.10:8899"
    )
    allow: list[str] = Field(
        min_length=1,
        description="client networks (CIDR) that may use the proxy: the phone's Wi-Fi "
        "network, e.g. 192.168.50.0/24 (every other client is refused)",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ValueError(f"{value!r} is not IP:PORT (e.g. 192.168.50.10:8899)") from None
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{value!r} needs a fixed port 1-65535 (the phone's setting names it)")
        return value

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a network (e.g. 192.168.50.0/24)") from None
        return value

    @property
    def host(self) -> str:
        """The listening address (brackets of an IPv6 literal removed)."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The listening port."""
        return int(self.listen.rpartition(":")[2])


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
    # Finite and no boolean: `ram_gb: .inf` or `year: yes` (1) read as numbers.
    ram_gb: FiniteFloat | None = Field(default=None, gt=0)
    year: WholeNumber | None = Field(default=None, ge=2007, le=2100)
    serial: str | None = None
    udid: str | None = None
    browser: str | None = Field(default=None, description="web: browser executable")
    cpu_throttle: FiniteFloat | None = Field(
        default=None,
        ge=1,
        le=20,
        description="web: slow Chromium's CPU down this many times (DevTools' CPU "
        "throttling); the story's typical mobile CPU is 4",
    )
    appium: AppiumEndpoint | None = None
    app: AppBuild | None = None
    power: PowerControl = Field(default_factory=PowerControl)
    proxy: DeviceProxy | None = Field(
        default=None, description="ios: the shaped proxy the phone's Wi-Fi proxy points at"
    )
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _identity(self) -> Self:
        # Said at the serial/udid line when there is one (`serial:` left empty).
        if self.platform == "android" and not self.serial:
            raise _refuse(
                "an android device needs serial (as `adb devices` prints it)",
                ("serial",),
                "set the phone's serial, as `adb devices -l` lists it",
            )
        if self.platform == "ios" and not self.udid:
            raise _refuse(
                "an ios device needs udid",
                ("udid",),
                "set the phone's udid, as `pymobiledevice3 usbmux list` lists it",
            )
        if self.platform == "web" and (self.serial or self.udid):
            raise ValueError("a web device has no serial or udid")
        if self.platform != "web" and self.cpu_throttle is not None:
            raise ValueError("cpu_throttle is for web devices (a phone's CPU is its own)")
        return self

    def summary(self) -> dict[str, str]:
        """The device as results.json names it: id, platform, model, os."""
        return {"id": self.id, "platform": self.platform, "model": self.model, "os": self.os}


class Inventory(BaseModel):
    """The whole of inventory.yaml: devices keyed by id (two may be one phone: see
    ``same_phone``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    templates: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="anchored mappings (`pixel: &pixel {...}`) that devices merge in with "
        "`<<: *pixel`; not devices themselves",
    )
    devices: dict[str, Device]

    @model_validator(mode="after")
    def _ids(self) -> Self:
        for key, device in self.devices.items():
            if device.id and device.id != key:
                raise _refuse(
                    f"device {key!r} has id {device.id!r}; leave id out",
                    ("devices", key, "id"),
                    "remove the id line: the key is the device's id",
                )
            object.__setattr__(device, "id", key)
        return self

    def ids(self) -> list[str]:
        """Every device id, in file order."""
        return list(self.devices)

    def same_phone(self, ids: list[str]) -> tuple[str, str, str] | None:
        """The first two of ``ids`` that are one phone or one hub port, as ``(first,
        second, what they share)`` ("serial 'ABC'", "hub 1-1 port 2"), or None. Two
        entries may name one phone (another app build, another proxy): one run at a time
        can use it, so a farm must not run both."""
        seen: dict[tuple[str, ...], str] = {}
        for key in ids:
            for what, same in _identities(self.devices[key]):
                first = seen.setdefault(same, key)
                if first != key:
                    return first, key, what
        return None

    def shared_proxy(self, ids: list[str]) -> tuple[str, str, str] | None:
        """The first two of ``ids`` whose shaped proxies would listen on one address
        (``proxy.listen``: the same port on the same address, or on every address), as
        ``(first, second, the address)``, or None. Two runs at once cannot both listen
        there: the second's proxy fails to start after its backend and Appium did."""
        seen: list[tuple[str, DeviceProxy]] = []
        for key in ids:
            proxy = self.devices[key].proxy
            if proxy is None:
                continue
            for first, other in seen:
                if other.port == proxy.port and _overlap(other.host, proxy.host):
                    return first, key, proxy.listen
            seen.append((key, proxy))
        return None


def _overlap(host: str, other: str) -> bool:
    """Whether listening on ``host`` and on ``other`` (same port) would clash."""
    a, b = ipaddress.ip_address(host), ipaddress.ip_address(other)
    return a == b or a.is_unspecified or b.is_unspecified


def _identities(device: Device) -> list[tuple[str, tuple[str, ...]]]:
    """What makes ``device`` one phone or one port: ``(said, key)`` for its serial or UDID
    and its uhubctl port. A UDID is the same with or without its dash and in any case, as
    usbmuxd may list it either way."""
    found: list[tuple[str, tuple[str, ...]]] = []
    if device.platform == "android" and device.serial:
        found.append((f"serial {device.serial!r}", ("serial", device.serial)))
    if device.platform == "ios" and device.udid:
        udid = device.udid.replace("-", "").casefold()
        found.append((f"udid {device.udid!r}", ("udid", udid)))
    power = device.power
    if power.kind == "uhubctl" and power.hub is not None and power.port is not None:
        said = f"hub {power.hub} port {power.port}"
        found.append((said, ("hub", power.hub.strip(), str(power.port))))
    return found
