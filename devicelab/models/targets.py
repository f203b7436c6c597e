"""Targets (profiles/targets.yaml): every number of the story, with the line it comes from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Column", "Op", "PlatformScope", "Target", "TargetBook"]

Op = Literal["<", "<=", ">", ">=", "=="]
#: The story's columns: web = "Web (Desktop)", wifi = "iOS/Android (WiFi)",
#: 4g = "iOS/Android (4G)", 3g = "Mobile (3G)"; any = one target for every column.
Column = Literal["web", "wifi", "4g", "3g", "any"]
PlatformScope = Literal["web", "android", "ios", "mobile", "any", "backend"]


class Target(BaseModel):
    """One target: the check it judges, where it applies, the bound and its source.

    ``applies: false`` records a cell the story marks N/A: the check is skipped there.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    check: str = Field(description="a check id of DESIGN.md, e.g. message_delivery")
    platform: PlatformScope = "any"
    column: Column = "any"
    op: Op = "<"
    value: float | None = None
    unit: str = "ms"
    stat: Literal["p50", "p95", "max", "mean", "value"] = "p95"
    applies: bool = True
    source: str = Field(description="the story's line or table cell this comes from")

    def specificity(self) -> int:
        """How specific the row is: an exact platform and an exact column rank first."""
        platform = {"any": 0, "backend": 1, "mobile": 1}.get(self.platform, 2)
        column = 0 if self.column == "any" else 1
        return column * 10 + platform

    def holds(self, measured: float) -> bool:
        """Returns whether ``measured`` meets this target (``measured <op> value``).
        Raises ValueError when the target has no value (an N/A row)."""
        if self.value is None:
            raise ValueError(f"target for {self.check} has no value")
        bound = self.value
        return {
            "<": measured < bound,
            "<=": measured <= bound,
            ">": measured > bound,
            ">=": measured >= bound,
            "==": measured == bound,
        }[self.op]

    def label(self) -> str:
        """A short text of the bound, e.g. '< 500 ms', or 'N/A'."""
        if not self.applies or self.value is None:
            return "N/A"
        value = int(self.value) if float(self.value).is_integer() else self.value
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.op} {value}{unit}"


class TargetBook(BaseModel):
    """The whole of profiles/targets.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[Target]
