"""What every scenario gets (:class:`ScenarioContext`) and the two ways a check ends
without a measurement of its own: judged from a probe's samples, or skipped with a reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devicelab.errors import ConfigError
from devicelab.harness import Harness, ProbeResult
from devicelab.models import Check, TargetBook
from devicelab.samplers.base import Sampler
from devicelab.targets import judge, resolve

__all__ = [
    "AppState",
    "LinkControl",
    "ScenarioContext",
    "ScenarioOptions",
    "env_options",
    "judged",
    "skipped",
]


class LinkControl(Protocol):
    """The network link of the device (the shaped proxy): it can drop and come back."""

    def go_offline(self, seconds: float | None = None) -> None:
        """Cut every connection and refuse new ones (None: until go_online)."""

    def go_online(self) -> None:
        """Accept connections again."""


class AppState(Protocol):
    """The app on a phone: it can be sent to the background and brought back."""

    def to_background(self) -> None:
        """Send the app to the background and keep it there."""

    def to_foreground(self) -> None:
        """Bring the app back in front, commands back to its page."""


class ScenarioOptions(BaseModel):
    """How many samples each scenario takes (modest: the lab host is often shared).

    The checks judged at p95 take 20: the p95 of 10 samples is, in effect, their slowest
    (one slow call in ten fails the check); of 20, one call may be slower, which is what a
    95th percentile says.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery_count: int = Field(20, ge=1, description="messages A sends to B")
    subscription_count: int = Field(5, ge=1, description="chat channels opened")
    query_count: int = Field(20, ge=1, description="list loads and searches")
    image_count: int = Field(3, ge=1, description="1 MB uploads and downloads")
    video_count: int = Field(1, ge=1, description="10 MB uploads and downloads")
    reconnect_cycles: int = Field(2, ge=1, description="drops of the link")
    offline_s: float = Field(5.0, gt=0, description="how long each drop lasts (the story: 5 s)")
    probe_timeout_s: float = Field(180.0, gt=0, description="the longest one probe call may take")


@dataclass
class ScenarioContext:
    """The device, the network column, the targets and the probes of one run.

    ``conversation_id`` is the run's own conversation of users A and B (delivery,
    subscription, reconnect); ``big_conversation_id`` is A's longest conversation
    (memory_1000_messages). ``heap_mb`` reads the app's JS heap (None where no sampler
    exists yet); ``link`` drops and restores the device's network; ``app_state`` sends a
    phone's app to the background and back (None on the web device); ``battery`` is the
    run's battery reader (a phone's sampler; None on the web device).
    """

    harness: Harness
    platform: str
    column: str
    book: TargetBook
    options: ScenarioOptions
    conversation_id: str
    big_conversation_id: str
    search_terms: list[str]
    link: LinkControl
    heap_mb: Callable[[], float] | None = None
    say: Callable[[str], None] = field(default=lambda _text: None)
    app_state: AppState | None = None
    battery: Sampler | None = None


def env_options[M: BaseModel](model: type[M], variables: Mapping[str, str], what: str) -> M:
    """``model`` with its fields named in ``variables`` (field -> environment variable)
    taken from the environment where set. Raises ConfigError (location "environment")
    naming the variables for a value the model refuses."""
    given = {field: os.environ.get(name) for field, name in variables.items()}
    try:
        return model.model_validate({k: v for k, v in given.items() if v})
    except ValidationError as exc:
        raise ConfigError(
            f"bad {what} option: {exc.errors()[0]['msg']}",
            hint=f"{' and '.join(variables.values())} take seconds > 0",
            location="environment",
        ) from exc


def skipped(check_id: str, title: str, category: str, reason: str) -> Check:
    """A check that did not run, and why (never a pass)."""
    return Check(id=check_id, title=title, category=category, status="skip", reason=reason)


def judged(
    ctx: ScenarioContext,
    check_id: str,
    title: str,
    category: str,
    result: ProbeResult,
    *,
    value: float | None = None,
    evidence: dict[str, Any] | None = None,
    reason: str = "",
) -> Check:
    """The check of ``result`` judged against the story's target for this platform and
    network column (the row used is named in ``target.source``)."""
    target = resolve(ctx.book, check_id, ctx.platform, ctx.column)
    check = judge(
        check=check_id,
        title=title,
        category=category,
        target=target,
        samples=result.samples if value is None else None,
        value=value,
        unit=result.unit,
        stat="value" if value is not None else None,
        column=ctx.column,
        evidence={**result.evidence, **(evidence or {})},
        reason=reason,
    )
    cold = result.evidence.get("cold_ms")
    if cold is not None and check.status in ("pass", "fail"):
        # Reported apart, as the first call of an app session pays for a new connection
        # and the CORS preflight: the samples are the calls after it.
        check.reason += f"; the first (cold) call took {cold:g} ms and is not a sample"
    return check
