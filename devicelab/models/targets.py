"""Targets (profiles/targets.yaml): every number of the story, with the line it comes from."""

from __future__ import annotations

import difflib
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from devicelab.models.inventory import LOCATED
from devicelab.models.numeric import FiniteFloat, meets

__all__ = ["Column", "Op", "PlatformScope", "Target", "TargetBook"]

Op = Literal["<", "<=", ">", ">=", "=="]
#: The story's columns: web = "Web (Desktop)", wifi = "iOS/Android (WiFi)",
#: 4g = "iOS/Android (4G)", 3g = "Mobile (3G)"; any = one target for every column.
Column = Literal["web", "wifi", "4g", "3g", "any"]
PlatformScope = Literal["web", "android", "ios", "mobile", "any", "backend"]


class Target(BaseModel):
    """One target: the check it judges, where it applies, the bound and its source.

    ``applies: false`` records a cell the story marks N/A: the check is skipped there.
    A row that applies gives a finite ``value`` (a check with no target has no row).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    check: str = Field(
        description="a check id devicelab runs (docs/device_run.md, docs/backend_checks.md),"
        " e.g. message_delivery"
    )
    platform: PlatformScope = "any"
    column: Column = "any"
    op: Op = "<"
    value: FiniteFloat | None = Field(
        default=None, description="the bound; required unless applies: false"
    )
    unit: str = Field(default="ms", description="one of devicelab.targets.UNITS")
    stat: Literal["p50", "p95", "max", "mean", "value"] = "p95"
    applies: bool = True
    source: str = Field(description="the story's line or table cell this comes from")

    @model_validator(mode="after")
    def _has_value(self) -> Self:
        # A row without one judged nothing: the check was skipped and the run exited 0.
        if self.applies and self.value is None:
            raise _located(
                "missing required field 'value'",
                ("value",),
                "give the bound (value: 500), or applies: false for an N/A cell",
            )
        return self

    def key(self) -> tuple[str, str, str]:
        """What makes a row itself: two rows with the same check, platform and column
        are equally specific, and devicelab.targets.resolve would take the first."""
        return (self.check, self.platform, self.column)

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
        return meets(measured, self.op, self.value)

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

    @model_validator(mode="after")
    def _rows(self, info: ValidationInfo) -> Self:
        """Refuse a row given twice and, when the reader passes the known ``checks`` and
        ``units`` as validation context (devicelab.config does), a row of no check or in
        no unit the lab compares: each was passed over, or failed after measuring."""
        context: dict[str, Any] = info.context if isinstance(info.context, dict) else {}
        checks, units = context.get("checks"), context.get("units")
        seen: dict[tuple[str, str, str], int] = {}
        for i, row in enumerate(self.targets):
            if checks is not None and row.check not in checks:
                raise _located(
                    f"unknown check {row.check!r}{_guess(row.check, checks)}",
                    ("targets", i, "check"),
                    "use a check id devicelab runs: docs/device_run.md and"
                    " docs/backend_checks.md list them",
                )
            if units is not None and row.unit not in units:
                raise _located(
                    f"unknown unit {row.unit!r}{_guess(row.unit, units)}",
                    ("targets", i, "unit"),
                    f"use one of {', '.join(sorted(units))}",
                )
            first = seen.setdefault(row.key(), i)
            if first != i:
                raise _located(
                    f"a second row for check {row.check!r}, platform {row.platform!r}, "
                    f"column {row.column!r} (the first one would win)",
                    ("targets", i, "check"),
                    "remove one of the two rows, or give them different platforms or columns",
                    other=("targets", first),
                )
        return self


def _located(
    message: str, at: tuple[str | int, ...], hint: str, other: tuple[str | int, ...] | None = None
) -> PydanticCustomError:
    """The error of a rule that names the field it refuses (devicelab.models.LOCATED)."""
    context: dict[str, Any] = {"message": message, "at": at, "hint": hint}
    if other is not None:
        context["other"] = other
    return PydanticCustomError(LOCATED, "{message}", context)


def _guess(given: str, known: Any) -> str:
    close = difflib.get_close_matches(given, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
