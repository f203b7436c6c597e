"""The results contract: ``results.json``, schema ``devicelab.results/1``.

Every run writes one of these; reports are made from it alone. The JSON Schema in
``devicelab/schemas/results.schema.json`` is generated from these models
(``python -m devicelab.models.results`` rewrites it; a test keeps it in step).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from devicelab.models.numeric import meets

__all__ = [
    "SCHEMA_ID",
    "SIGNIFICANT_DIGITS",
    "AchievedNetwork",
    "BackendInfo",
    "Check",
    "CheckTarget",
    "DeviceInfo",
    "NetworkInfo",
    "Results",
    "RunInfo",
    "Series",
    "Stats",
    "Status",
    "StatusCounts",
    "json_schema",
    "percentile",
    "significant",
    "summarize",
    "written",
]

SCHEMA_ID: Literal["devicelab.results/1"] = "devicelab.results/1"
Status = Literal["pass", "fail", "skip", "error"]
Stat = Literal["p50", "p95", "max", "mean", "value"]


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` by linear interpolation (as numpy's default).

    Returns a value between the two samples around the rank, exactly the sample when they
    are equal. Raises ValueError on an empty list.
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    below, above = ordered[math.floor(rank)], ordered[math.ceil(rank)]
    frac = rank - math.floor(rank)
    if frac == 0 or below == above:
        return below  # on a sample, or between equal ones: that sample, exactly
    span = above - below
    if math.isfinite(span):
        # The form summaries have always used: the digits of earlier results stay the same.
        return below + span * frac
    # Samples further apart than the largest float: the span overflows, the weights do not.
    return below * (1 - frac) + above * frac


#: The significant digits a check's numbers keep in results.json (value, samples,
#: summary): 0.028195 s, not 0.028195000000000005 (28.195 ms in seconds), a mean of
#: 186.533 ms, not 186.53333333333333. Far finer than any probe measures (a sample of
#: 28.195 ms keeps its 5 µs), and never the digits of a number's integer part: a count
#: or a byte total stays whole.
SIGNIFICANT_DIGITS = 6


def significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits, or to its integer part's digits
    when it has more (nothing left of the point is cut). Returns NaN, infinity and 0 as
    they are."""
    if not math.isfinite(value) or value == 0:
        return value
    whole = len(str(int(abs(value)))) if abs(value) >= 1 else 0
    return float(f"{value:.{max(digits, whole)}g}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Stats(_Model):
    """min, p50, p95, max and mean of a check's samples."""

    min: float
    p50: float
    p95: float
    max: float
    mean: float


def summarize(samples: list[float]) -> Stats | None:
    """The Stats of ``samples``, or ``None`` when there are none."""
    if not samples:
        return None
    return Stats(
        min=min(samples),
        p50=percentile(samples, 50),
        p95=percentile(samples, 95),
        max=max(samples),
        mean=sum(samples) / len(samples),
    )


class DeviceInfo(_Model):
    """The device a run used."""

    id: str
    platform: Literal["web", "android", "ios"]
    model: str
    os: str


class AchievedNetwork(_Model):
    """What the proxy's self-check measured through the shaped link."""

    rtt_ms: float | None = None
    down_kbps: float | None = None
    up_kbps: float | None = None


# How far the self-check's figures may stray from the profile before a link is "off".
# RTT: the goal for a tiny request (+10 ms) or 10 % on long links; below the
# profile means the delay was not applied. Rates: the self-check's transfers last about a
# second, so 10 % (the bench holds 1 MB and 5 MB transfers to 5 %).
RTT_SLACK_MS = 10.0
RTT_SLACK_PCT = 10.0
RTT_SHORT_MS = 2.0
RTT_SHORT_PCT = 5.0
RATE_SLACK_PCT = 10.0


class NetworkInfo(_Model):
    """The network profile of a run and what it achieved."""

    name: str
    rtt_ms: float | None = None
    down_kbps: float | None = None
    up_kbps: float | None = None
    loss_pct: float = 0.0
    # Written only for a profile with jitter (none of the shipped ones): the field came
    # after the contract's first publication, whose schema refuses unknown fields, and
    # every other file stays valid under it.
    jitter_ms: float = Field(default=0.0, exclude_if=lambda v: not v)
    achieved: AchievedNetwork | None = None

    def off_profile(self) -> list[str]:
        """Where ``achieved`` strays from the profile beyond the self-check's tolerance.

        Returns one line per figure that is off (empty when the link is within tolerance
        or nothing was measured). The RTT's slack grows by twice the profile's jitter (a
        round trip meets it both ways). On a lossy link a rate is off only above the
        profile's: where its losses fall moves a short transfer's rate too much to hold it
        to a floor (docs/netshape.md, Loss).
        """
        got = self.achieved
        if got is None:
            return []
        off = []
        if self.rtt_ms is not None and got.rtt_ms is not None:
            want, jitter = self.rtt_ms, 2 * self.jitter_ms
            over = max(RTT_SLACK_MS, want * RTT_SLACK_PCT / 100) + jitter
            under = max(RTT_SHORT_MS, want * RTT_SHORT_PCT / 100) + jitter
            if not want - under <= got.rtt_ms <= want + over:
                off.append(
                    f"rtt {got.rtt_ms:,.2f} ms vs the profile's {want:,.1f} ms "
                    f"(allowed {want - under:,.1f} to {want + over:,.1f} ms)"
                )
        for name, want_rate, got_rate in (
            ("down", self.down_kbps, got.down_kbps),
            ("up", self.up_kbps, got.up_kbps),
        ):
            if want_rate is None or want_rate <= 0 or got_rate is None:
                continue  # unlimited, or no rate to hold it to (0 kbps: an offline link)
            if not math.isfinite(got_rate):
                off.append(f"{name} not measured ({got_rate})")
                continue
            error = (got_rate - want_rate) / want_rate * 100
            lossy = self.loss_pct > 0
            if error > RATE_SLACK_PCT or (abs(error) > RATE_SLACK_PCT and not lossy):
                off.append(
                    f"{name} {got_rate:,.1f} kbps is {error:+.2f} % off the profile's "
                    f"{want_rate:,.1f} kbps (allowed {_allowed(lossy)})"
                )
        return off


def _allowed(lossy: bool) -> str:
    # A lossy link's rate has no floor here, only the profile's ceiling.
    return f"up to +{RATE_SLACK_PCT:g} % on a lossy link" if lossy else f"±{RATE_SLACK_PCT:g} %"


class BackendInfo(_Model):
    """The backend a run talked to; ``url`` never holds a secret."""

    kind: Literal["reference", "supabase", "postgres"]
    url: str


_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)


class RunInfo(_Model):
    """What ran, when, where."""

    id: str
    kind: Literal["device", "backend", "battery"]
    started_at: datetime
    finished_at: datetime | None = None
    devicelab_version: str
    device: DeviceInfo | None = None
    network: NetworkInfo | None = None
    backend: BackendInfo | None = None

    @field_validator("started_at", "finished_at", mode="before")
    @classmethod
    def _time_from_text(cls, value: Any) -> Any:
        # A file is validated strictly (devicelab.report.load_results), where a datetime
        # field takes no text; but JSON has no other form of a time. Text is read as the
        # JSON parser reads it; other input is left for the field's own check to refuse.
        if isinstance(value, str):
            try:
                return _TIME.validate_strings(value, strict=True)
            except ValidationError:
                return value  # the field's check says what is wrong with it
        return value

    @field_validator("started_at", "finished_at")
    @classmethod
    def _utc_when_naive(cls, value: datetime | None) -> datetime | None:
        # devicelab writes UTC with its offset; a hand-edited time without one is read as
        # UTC, so a run's duration never mixes naive and aware times (a TypeError).
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class CheckTarget(_Model):
    """The target a check was judged against; ``source`` names the story row used."""

    op: Literal["<", "<=", ">", ">=", "=="]
    value: float
    unit: str
    source: str
    column: str | None = None


class Check(_Model):
    """One check of the story: a measured value, its target, a verdict and its evidence."""

    id: str
    title: str
    category: str
    status: Status
    value: float | None = None
    unit: str = ""
    stat: Stat = "value"
    target: CheckTarget | None = None
    samples: list[float] = Field(default_factory=list)
    summary: Stats | None = None
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)


def written(check: Check) -> Check:
    """``check`` as results.json holds it: its value, samples and summary to
    :data:`SIGNIFICANT_DIGITS` (a conversion to s, a mean, an interpolation leave float
    noise), the value with as many more as keep it on the side of the target it was judged
    on, and the summary's statistic that is the value the same digits as the value."""
    value = None if check.value is None else _on_its_side(check.value, check.target)
    summary = check.summary
    if summary is not None:
        stats = {name: significant(getattr(summary, name)) for name in Stats.model_fields}
        if (
            value is not None
            and check.stat != "value"
            and getattr(summary, check.stat) == check.value
        ):
            stats[check.stat] = value
        summary = Stats.model_validate(stats)
    samples = [significant(v) for v in check.samples]
    return check.model_copy(update={"value": value, "samples": samples, "summary": summary})


def _on_its_side(value: float, target: CheckTarget | None) -> float:
    """``value`` to :data:`SIGNIFICANT_DIGITS`, or to more when fewer would move it across
    ``target`` (199.99996 ms against < 200 ms is not 200 ms); as it is when no rounding
    keeps it there."""
    for digits in (SIGNIFICANT_DIGITS, 9, 12, 15):
        shown = significant(value, digits)
        if target is None or _holds(shown, target) == _holds(value, target):
            return shown
    return value


def _holds(value: float, target: CheckTarget) -> bool:
    return meets(value, target.op, target.value)


class Series(_Model):
    """A time series sampled during a run: ``t`` in seconds from the run's start."""

    name: str
    unit: str
    t: list[float]
    v: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> Self:
        if len(self.t) != len(self.v):
            raise ValueError(f"series {self.name!r}: t has {len(self.t)} points, v {len(self.v)}")
        return self


class StatusCounts(_Model):
    """How many checks ended in each status."""

    pass_: int = Field(default=0, alias="pass")
    fail: int = 0
    skip: int = 0
    error: int = 0


def _schema_is_required(schema: dict[str, Any]) -> None:
    # Every results.json carries "schema" (the writer always writes it, load_results
    # refuses a file without it); the default exists only so that code building Results
    # need not pass it. The published JSON Schema says what a file must hold.
    required = schema.setdefault("required", [])
    if "schema" not in required:
        required.insert(0, "schema")


class Results(_Model):
    """A whole results.json. ``summary`` is always recounted from ``checks``."""

    # Built in code, fields are coerced as pydantic does (the docstring is the published
    # schema's description); a file is read strictly, its types as the JSON Schema says,
    # by devicelab.report.load_results.
    model_config = ConfigDict(json_schema_extra=_schema_is_required)

    schema_: Literal["devicelab.results/1"] = Field(default=SCHEMA_ID, alias="schema")
    run: RunInfo
    checks: list[Check] = Field(default_factory=list)
    series: list[Series] = Field(default_factory=list)
    summary: StatusCounts = Field(default_factory=StatusCounts)

    @model_validator(mode="after")
    def _recount(self) -> Self:
        counts = {"pass": 0, "fail": 0, "skip": 0, "error": 0}
        for check in self.checks:
            counts[check.status] += 1
        self.summary = StatusCounts.model_validate(counts)
        return self

    def exit_code(self) -> int:
        """0 when nothing failed, 1 when a check failed, 3 when one could not run."""
        if self.summary.fail:
            return 1
        if self.summary.error:
            return 3
        return 0

    def to_json(self) -> str:
        """The results as the JSON text of the contract, each check's numbers to
        :data:`SIGNIFICANT_DIGITS` (:func:`written`). In memory they stay as computed."""
        checks = [written(check) for check in self.checks]
        return self.model_copy(update={"checks": checks}).model_dump_json(by_alias=True, indent=2)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of results.json, generated from :class:`Results`."""
    schema = Results.model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    return schema


if __name__ == "__main__":  # pragma: no cover - rewrites the schema file
    import json
    from pathlib import Path

    path = Path(__file__).parent.parent / "schemas" / "results.schema.json"
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    print(path)
