"""An iPhone of the lab during one run: found through usbmuxd, read through lockdownd.

A computer cannot set an iPhone's proxy (that takes MDM supervision), so the phone's
Wi-Fi proxy is set by hand to the address in the inventory (``proxy.listen``, see
docs/ios.md), and the run proves it from inside the app: the app gets the lab backend
under a name that only the shaped proxy resolves, so a phone that does not go through the
proxy cannot reach it, and the run says what to set (devicelab.lab_phone).

Lifecycle: ``create()`` finds the phone (online and paired, or DeviceUnreachable with
what to do), takes it for this run alone (a claim in the journal's folder), puts back
what a run that died left on it (a hub port battery_drain switched off) and reads its
model and iOS version; ``info()`` names it for results.json; ``close()`` lets the phone
go. devicelab changes nothing on the iPhone itself (the Appium session, closed by the
run, ends the app's session).
"""

from __future__ import annotations

from typing import Any, Self

from devicelab.errors import DeviceUnreachable
from devicelab.journal import Claim, Journal
from devicelab.models import Device, DeviceInfo
from devicelab.platforms.ios import Lockdownd, Usbmuxd, describe

__all__ = ["IosDevice"]


class IosDevice:
    """The inventory's iPhone ``device`` for one run (see the module docstring)."""

    def __init__(
        self, device: Device, usbmuxd: Usbmuxd | None = None, journal: Journal | None = None
    ) -> None:
        self.device = device
        self.udid = device.udid or ""
        self.usbmuxd = usbmuxd or Usbmuxd()
        self.journal = journal
        self.values: dict[str, Any] = {}
        self._claim: Claim | None = None

    def create(self) -> Self:
        """Find the phone, take it (with a ``journal``) and read what it is. Raises
        DeviceUnreachable when usbmuxd does not answer, or the phone is absent or not
        paired (the hint says what to do); EnvironmentProblem when another run has it;
        ToolMissing without pymobiledevice3."""
        state, detail = describe(self.udid, self.usbmuxd.states())
        if state != "online":
            raise DeviceUnreachable(
                f"ios device {self.device.id} ({self.udid}) is {state}",
                hint=detail or "check `pymobiledevice3 usbmux list`",
                serial=self.udid,
                command="pymobiledevice3 usbmux list",
            )
        if self.journal is not None:
            # Claimed first: a second run on this phone stops here; then what a run that
            # died left (its hub port off) goes back before this run changes anything.
            self._claim = self.journal.claim(self.udid, "in use")
        try:
            if self.journal is not None:
                self.journal.recover([self.udid])
            self.values = Lockdownd(self.udid, self.usbmuxd).values()
        except BaseException:
            self.close()  # no session will: the claim would outlive this failed start
            raise
        return self

    def info(self) -> DeviceInfo:
        """The device for results.json: the inventory's model with the phone's product
        type, and the iOS version the phone reports (the inventory's until read)."""
        product = self.values.get("ProductType")
        model = f"{self.device.model} ({product})" if product else self.device.model
        version = self.values.get("ProductVersion")
        os_name = f"iOS {version}" if version else self.device.os
        return DeviceInfo(id=self.device.id, platform="ios", model=model, os=os_name)

    def close(self) -> None:
        """Let the phone go (nothing on it to undo); safe to call twice."""
        claim, self._claim = self._claim, None
        if claim is not None:
            claim.release()

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()
