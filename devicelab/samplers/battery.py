"""A battery reading, whatever the platform read it from (dumpsys battery, IORegistry)."""

from __future__ import annotations

from dataclasses import dataclass

from devicelab.samplers.sample import METRICS, Sample

__all__ = ["BatteryReading"]


@dataclass(frozen=True)
class BatteryReading:
    """What a battery says: level in percent, current in mA (negative: discharging, when
    the platform's sign is known), voltage in mV, temperature in °C, whether it charges
    and whether external power is connected. ``updates_stopped`` is Android's
    ``dumpsys battery unplug`` state (the numbers are frozen/simulated, not live)."""

    level_pct: float | None = None
    current_ma: float | None = None
    voltage_mv: float | None = None
    temperature_c: float | None = None
    charging: bool | None = None
    plugged: bool | None = None
    charge_mah: float | None = None
    updates_stopped: bool = False

    def samples(self, t: float, source: str) -> list[Sample]:
        """The readings that exist, as samples at ``t``."""
        values = {
            "battery.level_pct": self.level_pct,
            "battery.current_ma": self.current_ma,
            "battery.voltage_mv": self.voltage_mv,
            "battery.temperature_c": self.temperature_c,
            "battery.charging": None if self.charging is None else float(self.charging),
            "battery.charge_mah": self.charge_mah,
        }
        note = "dumpsys battery unplug: updates stopped" if self.updates_stopped else ""
        return [
            Sample(t=t, metric=m, value=v, unit=METRICS[m], source=source, note=note)
            for m, v in values.items()
            if v is not None
        ]
