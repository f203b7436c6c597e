"""The shaped proxy's live state, as its control endpoint and ``ShapedProxy.status`` give it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from devicelab.models.network import NetworkProfile

__all__ = ["ProxyStatus"]


class ProxyStatus(BaseModel):
    """What the proxy's link is now: the profile it emulates, whether it is cut, and the
    clients it shapes.

    Its JSON (``model_dump(mode="json")``) is the body of ``GET
    http://netshape.devicelab/status``: ``{"profile", "offline", "links"}``, in that order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: NetworkProfile | None = Field(description="the profile emulated; None: no shaping")
    offline: bool = Field(description="true while the link refuses connections")
    links: dict[str, int] = Field(
        default_factory=dict, description="client address -> its open connections"
    )
