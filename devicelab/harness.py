"""The client of the in-app probes (``window.devicelab``), over any JS channel.

A channel is a callable ``evaluate(function_source, arg) -> result`` that runs a JS
function (``async (arg) => ...``) in the app's page with one JSON argument and returns its
awaited JSON result: Playwright's ``page.evaluate`` for the web device; for a phone, the
Appium WebView context wraps ``execute_async_script`` into the same shape. The harness
never depends on which one it talks to.

Every call is wrapped in the page so that a probe's rejection comes back as data (then
raised here as ProbeFailed with the probe's own message), and so that a call that hangs
ends after its timeout, whatever the channel's own timeouts are.

    harness = Harness(device.evaluate)
    harness.wait_ready()
    harness.configure(supabase_url=..., anon_key=..., users=[...])
    result = harness.run("message_delivery", {"conversationId": cid, "count": 10})
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# ProbeTimedOut lives in the error tree; named here too, where it was defined first.
from devicelab.errors import ProbeFailed, ProbeTimedOut, UnknownId

__all__ = [
    "API_VERSION",
    "PROBES",
    "Channel",
    "Harness",
    "ProbeResult",
    "ProbeTimedOut",
    "UserLogin",
]

#: The window.devicelab API version this client speaks (capacitor-harness/probe/src/types.ts).
API_VERSION = 1

#: The probe ids of capacitor-harness (``PROBES`` in capacitor-harness/probe/src/index.ts),
#: the ones devicelab's scenarios call.
PROBES = (
    "message_delivery",
    "subscription_setup",
    "conversation_list",
    "message_search",
    "storage_upload",
    "storage_download",
    "reconnect.prepare",
    "reconnect.online",
    "reconnect.result",
    "memory.conversations",
    "memory.messages",
    "memory.release",
    "background.prepare",
    "background.result",
    "local_cache.prepare",
    "local_cache.query_50",
    "local_cache.search",
    "local_cache.conversations",
)

Channel = Callable[[str, Any], Any]

_CALL = """async ({op, args, timeoutMs}) => {
  const api = window.devicelab;
  if (!api) return {ok: false, error: 'window.devicelab is not loaded in this page'};
  let timer;
  const tooLate = new Error(`no answer within ${timeoutMs} ms`);
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(tooLate), timeoutMs);
  });
  try {
    return {ok: true, value: await Promise.race([api[op](...args), late])};
  } catch (error) {
    return {ok: false, error: String((error && error.message) || error),
            timedOut: error === tooLate};
  } finally {
    clearTimeout(timer);
  }
}"""

_READY = """() => {
  const api = window.devicelab;
  return api ? {version: api.version, probes: api.probes(), info: api.info()} : null;
}"""


_REBUILD_HINT = "rebuild the app from this checkout's capacitor-harness"

# A probe's rejection is the app's own message: what the page could not do from the
# device. After ``configure`` that is signing the test users in; after a probe, the API.
_SIGN_IN_HINT = (
    "check the Supabase URL, anon key and test users the app was given (`devicelab backend "
    "check --test-email ...` signs one of them in from this machine)"
)
_PROBE_HINT = (
    "check that the device reaches the Supabase API (its network profile, the proxy) and "
    "that `devicelab backend check` passes against it, then run again"
)


class ProbeResult(BaseModel):
    """What a probe measured: samples in ``unit``, and how it measured them."""

    model_config = ConfigDict(extra="forbid")

    samples: list[float] = Field(default_factory=list)
    unit: Literal["ms", "MB", "s"]
    evidence: dict[str, Any] = Field(default_factory=dict)


class UserLogin(BaseModel):
    """A test user the app signs in as. The password never appears in a repr or a log."""

    model_config = ConfigDict(frozen=True)

    email: str
    password: str = Field(repr=False)


class Harness:
    """The probes of one app instance, reached through ``channel``."""

    def __init__(self, channel: Channel, *, timeout_s: float = 120.0) -> None:
        self.channel = channel
        self.timeout_s = timeout_s
        self.probes: list[str] = []
        self.app: dict[str, Any] = {}

    def wait_ready(self, timeout_s: float = 30.0) -> list[str]:
        """Wait until the page has ``window.devicelab`` of our API version; returns the
        probe ids it offers. Raises ProbeFailed when it never appears or speaks another
        version."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.channel(_READY, None)
            if isinstance(found, dict):
                break
            if time.monotonic() > deadline:
                raise ProbeFailed(
                    f"the app has no window.devicelab after {timeout_s:g} s",
                    hint="is this the devicelab test build (capacitor-harness/app)?",
                )
            time.sleep(0.1)
        if found.get("version") != API_VERSION:
            raise ProbeFailed(
                f"the app's probe API is version {found.get('version')}, devicelab speaks "
                f"{API_VERSION}",
                hint=_REBUILD_HINT,
            )
        self.probes = [str(p) for p in found.get("probes") or []]
        info = found.get("info") or {}
        self.app = dict(info.get("app") or {}) if isinstance(info, dict) else {}
        return self.probes

    def configure(
        self, *, supabase_url: str, anon_key: str, users: Sequence[UserLogin]
    ) -> list[str]:
        """Sign the users in inside the app (one client each); returns their user ids.
        Raises ProbeFailed (the message never holds a password or a key)."""
        config = {
            "supabaseUrl": supabase_url,
            "anonKey": anon_key,
            "users": [{"email": u.email, "password": u.password} for u in users],
        }
        value = self._call("configure", [config], self.timeout_s)
        if not isinstance(value, dict) or not isinstance(value.get("users"), list):
            raise ProbeFailed(
                f"configure() answered {type(value).__name__}, not {{users}}",
                hint=_REBUILD_HINT,
            )
        return [str(u) for u in value["users"]]

    def run(
        self, probe: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> ProbeResult:
        """Run probe ``probe`` with ``params``; returns its ProbeResult.

        Raises UnknownId, before anything reaches the app, for a probe id neither devicelab
        (PROBES) nor the app (``wait_ready``) knows, naming the closest one; ProbeFailed
        with the probe's own message when it rejects or times out, or when its answer does
        not match the contract.
        """
        # The app would reject a misspelled id as a failed probe, and that hint points at
        # the network and the backend.
        known = sorted({*PROBES, *self.probes})
        if probe not in known:
            raise UnknownId("probe", probe, known)
        value = self._call("run", [probe, params or {}], timeout_s or self.timeout_s)
        try:
            return ProbeResult.model_validate(value)
        except ValidationError as exc:
            raise ProbeFailed(
                f"probe {probe} answered outside the contract: {exc.errors()[0]['msg']}",
                hint=_REBUILD_HINT,
            ) from exc

    def reset(self) -> None:
        """Sign out and close the app's channels (best effort; raises ProbeFailed)."""
        self._call("reset", [], 30.0)

    def _call(self, op: str, args: list[Any], timeout_s: float) -> Any:
        answer = self.channel(_CALL, {"op": op, "args": args, "timeoutMs": int(timeout_s * 1000)})
        if not isinstance(answer, dict):
            # Not the {ok, ...} the wrapper always resolves to: the channel did not await
            # it (a channel of the caller's), or the page under it went away mid-call.
            raise ProbeFailed(
                f"window.devicelab.{op} answered {answer!r}",
                hint="a channel must return what the function it runs resolves to (as "
                "Playwright's page.evaluate does); with devicelab's own devices, restart the "
                "app and run again",
            )
        if not answer.get("ok"):
            what = args[0] if op == "run" and args else op
            if answer.get("timedOut"):
                raise ProbeTimedOut(f"probe {what} failed: {answer.get('error')}", timeout_s)
            raise ProbeFailed(
                f"probe {what} failed: {answer.get('error')}",
                hint=_SIGN_IN_HINT if op == "configure" else _PROBE_HINT,
            )
        return answer.get("value")
