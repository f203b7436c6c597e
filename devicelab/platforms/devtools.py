"""The JS heap of a page through the DevTools protocol, whoever carries the commands:
Playwright's CDP session (the web device) or Appium's passthrough to chromedriver (an
Android WebView, or the Chromium standing in for one).

``JsHeap(send)`` enables the Performance domain once, forces a garbage collection
(``HeapProfiler.collectGarbage``) unless told not to, and reads ``Performance.getMetrics``.
``send`` runs one command and returns its result; it translates its own transport's
errors into ProbeFailed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from devicelab.errors import ProbeFailed

__all__ = ["JsHeap", "Send"]

#: Runs one DevTools command (no parameters) and returns its result.
Send = Callable[[str], Mapping[str, Any]]


class JsHeap:
    """The page's JS heap through ``send`` (see the module docstring)."""

    def __init__(self, send: Send, *, collect_garbage: bool = True) -> None:
        self.send = send
        self.collect_garbage = collect_garbage
        self._enabled = False

    def read(self) -> dict[str, float]:
        """``used`` (JSHeapUsedSize) and, when given, ``total`` (JSHeapTotalSize), in
        bytes. Raises ProbeFailed when there is no JSHeapUsedSize, or what ``send``
        raises."""
        if not self._enabled:
            self.send("Performance.enable")
            self._enabled = True
        if self.collect_garbage:
            self.send("HeapProfiler.collectGarbage")
        metrics = self.send("Performance.getMetrics").get("metrics") or []
        named = {
            m.get("name"): float(m["value"])
            for m in metrics
            if isinstance(m, dict) and isinstance(m.get("value"), int | float)
        }
        out = {"used": named.get("JSHeapUsedSize"), "total": named.get("JSHeapTotalSize")}
        if out["used"] is None:
            raise ProbeFailed(
                "DevTools Performance.getMetrics has no JSHeapUsedSize",
                hint="the browser's DevTools did not report the JS heap: run again, and check"
                " the Chromium version with `devicelab doctor`",
            )
        return {key: value for key, value in out.items() if value is not None}
