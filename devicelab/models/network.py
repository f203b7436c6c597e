"""Network profiles: the links the proxy shapes (profiles/networks.yaml)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from devicelab.models.messages import explain
from devicelab.models.numeric import FiniteFloat

__all__ = [
    "MAX_DELAY_MS",
    "MAX_KBPS",
    "MIN_KBPS",
    "NetworkCatalog",
    "NetworkProfile",
    "profile_problem",
]

#: The longest delay a profile may give (a round trip, a one-way delay, the jitter): a
#: minute. ``rtt_ms: 1e9`` was taken, and ``proxy check`` waited on it for ever.
MAX_DELAY_MS = 60_000.0
#: The widest bandwidth a profile may give: 100 Gbit/s, in kbps.
MAX_KBPS = 100_000_000.0
#: The narrowest bandwidth a profile may give: 1 kbps (125 bytes a second). ``down_kbps:
#: 0.001`` was taken, and not even the control endpoint's reply came through it.
MIN_KBPS = 1.0


class NetworkProfile(BaseModel):
    """One network link: a delay, a bandwidth and a loss for each direction.

    ``down`` is towards the device, ``up`` away from it. Delays are one-way; give either
    ``rtt_ms`` (split in two equal halves) or both ``down_delay_ms`` and ``up_delay_ms``.
    Bandwidths are kilobits per second (1 kbps = 1000 bit/s); ``None`` means unlimited.
    Every number is finite and no boolean; delays and jitter are at most 60 000 ms (the
    round trip too), bandwidths from 1 kbps to 100 Gbit/s (100 000 000 kbps).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default="", description="the id users type, e.g. 4g (set from the YAML key)")
    label: str = Field(description="a human name, e.g. '4G'")
    source: str = Field(description="where these figures come from")
    shaped: bool = Field(default=True, description="false for 'none': traffic passes untouched")
    offline: bool = Field(
        default=False, description="true for 'offline': every connection is refused"
    )
    rtt_ms: FiniteFloat | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_MS,
        description="round-trip delay, ms (0-60000); split evenly",
    )
    down_delay_ms: FiniteFloat | None = Field(
        default=None, ge=0, le=MAX_DELAY_MS, description="one-way delay to the device, ms (0-60000)"
    )
    up_delay_ms: FiniteFloat | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_MS,
        description="one-way delay from the device, ms (0-60000)",
    )
    down_kbps: FiniteFloat | None = Field(
        default=None,
        ge=MIN_KBPS,
        le=MAX_KBPS,
        description="downlink bandwidth, kbps (1 kbps to 100 Gbit/s)",
    )
    up_kbps: FiniteFloat | None = Field(
        default=None,
        ge=MIN_KBPS,
        le=MAX_KBPS,
        description="uplink bandwidth, kbps (1 kbps to 100 Gbit/s)",
    )
    loss_pct: FiniteFloat = Field(default=0.0, ge=0, lt=100, description="packet loss, percent")
    jitter_ms: FiniteFloat = Field(
        default=0.0, ge=0, le=MAX_DELAY_MS, description="delay variation (std dev), ms (0-60000)"
    )
    # A typo here ("4G") judged every check of a run in no column: all skips, exit 0.
    story_column: Literal["3g", "4g", "wifi"] | None = Field(
        default=None,
        description="the story's target column this network maps to (3g, 4g, wifi); none: "
        "the device's own column (web: Web (Desktop), phones: WiFi), as for 5g",
    )
    note: str = ""

    @model_validator(mode="after")
    def _delays(self) -> Self:
        down, up = self.down_delay_ms, self.up_delay_ms
        if (down is None) != (up is None):
            raise ValueError("give both down_delay_ms and up_delay_ms, or rtt_ms alone")
        if down is not None and up is not None:
            if self.rtt_ms is not None and abs(self.rtt_ms - (down + up)) > 1e-6:
                raise ValueError(
                    f"rtt_ms {self.rtt_ms} is not down_delay_ms + up_delay_ms ({down + up})"
                )
            if down + up > MAX_DELAY_MS:
                raise ValueError(
                    f"down_delay_ms + up_delay_ms is {down + up:g} ms: a round trip is at most"
                    f" {MAX_DELAY_MS:g} ms"
                )
            object.__setattr__(self, "rtt_ms", down + up)
        elif self.rtt_ms is not None:
            object.__setattr__(self, "down_delay_ms", self.rtt_ms / 2)
            object.__setattr__(self, "up_delay_ms", self.rtt_ms / 2)
        else:
            for name in ("rtt_ms", "down_delay_ms", "up_delay_ms"):
                object.__setattr__(self, name, 0.0)
        return self

    @property
    def rtt(self) -> float:
        """The round-trip delay in ms (0 for an unshaped link)."""
        return float(self.rtt_ms or 0.0)

    @property
    def down_bytes_per_s(self) -> float | None:
        """Downlink bandwidth in bytes per second, ``None`` when unlimited."""
        return None if self.down_kbps is None else self.down_kbps * 1000 / 8

    @property
    def up_bytes_per_s(self) -> float | None:
        """Uplink bandwidth in bytes per second, ``None`` when unlimited."""
        return None if self.up_kbps is None else self.up_kbps * 1000 / 8

    def ideal_download_s(self, size_bytes: int) -> float:
        """Ideal time of one download: one RTT plus size over the downlink, in seconds."""
        rate = self.down_bytes_per_s
        return self.rtt / 1000 + (size_bytes / rate if rate else 0.0)

    def ideal_upload_s(self, size_bytes: int) -> float:
        """Ideal time of one upload: one RTT plus size over the uplink, in seconds."""
        rate = self.up_bytes_per_s
        return self.rtt / 1000 + (size_bytes / rate if rate else 0.0)


def profile_problem(exc: ValidationError) -> str:
    """One line for a NetworkProfile that failed validation (built from options, JSON or
    Python): the first field and what is wrong with it, e.g. ``jitter_ms: expected a
    finite number, found inf``, never pydantic's "1 validation error for ..." block.
    Never raises."""
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or "profile"
    message = explain(first)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field}: {message}{more}"


class NetworkCatalog(BaseModel):
    """The whole of profiles/networks.yaml: profiles keyed by id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profiles: dict[str, NetworkProfile]

    @model_validator(mode="after")
    def _ids(self) -> Self:
        for key, profile in self.profiles.items():
            if profile.id and profile.id != key:
                raise ValueError(f"profile {key!r} has id {profile.id!r}; leave id out")
            object.__setattr__(profile, "id", key)
        return self

    def ids(self) -> list[str]:
        """Every profile id, in file order."""
        return list(self.profiles)
