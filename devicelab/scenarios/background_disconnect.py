"""background_disconnect: the story's "Background Behavior: Realtime disconnects after 1
minute in background" (Battery Impact: disconnect Realtime when the app is backgrounded
for more than a minute, re-connect when it returns to the foreground).

B subscribes to the run's conversation (``background.prepare``); devicelab sends the app to
the background (``ctx.app_state``: Appium's ``mobile: backgroundApp`` on a phone, a tab in
front of a browser standing in for the WebView) for ``DEVICELAB_BACKGROUND_S`` seconds
(default 75: the story's minute and a margin), brings it back, and ``background.result``
reads the app's timeline: the judged value is the seconds from the page being hidden to
B's realtime socket closing. Never closed is a fail (value: the time spent in the
background, which it survived). Its evidence also holds how long B's channel took to be
subscribed again in the foreground ("re-connect") and the recorded events.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from devicelab.harness import ProbeResult
from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, env_options, judged, skipped

__all__ = ["BACKGROUND_S", "CATEGORY", "CHECK_ID", "TITLE", "BackgroundOptions", "run"]

CHECK_ID = "background_disconnect"
TITLE = "Realtime disconnects after 1 minute in background"
CATEGORY = "realtime"
#: How long the app stays in the background unless DEVICELAB_BACKGROUND_S says.
BACKGROUND_S = 75.0
_RECONNECT_TIMEOUT_MS = 15_000


class BackgroundOptions(BaseModel):
    """How long the app stays in the background."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    background_s: float = Field(
        BACKGROUND_S, gt=0, description="seconds in the background (the story's minute + 15 s)"
    )

    @classmethod
    def from_env(cls) -> BackgroundOptions:
        """Options with ``DEVICELAB_BACKGROUND_S`` applied. Raises ConfigError for a value
        that is not a positive number."""
        return env_options(cls, {"background_s": "DEVICELAB_BACKGROUND_S"}, "background")


def run(ctx: ScenarioContext) -> Check:
    """Background the app, bring it back, judge the seconds to the disconnect; returns the
    check. Raises ProbeFailed (a probe or Appium failed), ConfigError (a bad
    DEVICELAB_BACKGROUND_S)."""
    if ctx.app_state is None:
        why = f"not built yet: sending the app to the background on {ctx.platform}"
        return skipped(CHECK_ID, TITLE, CATEGORY, why)
    seconds = BackgroundOptions.from_env().background_s
    timeout_s = ctx.options.probe_timeout_s
    ctx.harness.run("background.prepare", {"conversationId": ctx.conversation_id},
                    timeout_s=timeout_s)  # fmt: skip
    ctx.say(f"background_disconnect: the app goes to the background for {seconds:g} s")
    ctx.app_state.to_background()
    try:
        time.sleep(seconds)
    finally:
        ctx.app_state.to_foreground()
    result = ctx.harness.run("background.result", {"timeoutMs": _RECONNECT_TIMEOUT_MS},
                             timeout_s=timeout_s)  # fmt: skip
    if result.samples:
        return judged(ctx, CHECK_ID, TITLE, CATEGORY, result)
    stayed = float(result.evidence.get("background_s") or seconds)
    survived = ProbeResult(samples=[stayed], unit="s", evidence=result.evidence)
    check = judged(ctx, CHECK_ID, TITLE, CATEGORY, survived)
    check.status = "fail"
    check.reason = (
        f"Realtime stayed connected for the {stayed:g} s the app was in the background "
        "(the story: disconnect after 1 minute)"
    )
    return check
