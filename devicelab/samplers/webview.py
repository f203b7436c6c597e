"""The JS heap of the app's WebView on an Android phone, through DevTools.

An Android WebView runs the page in a renderer process of its own (Android 8+, always on
11+), which ``dumpsys meminfo <package>`` does not count: the data the app loads lives
in the JS heap there, out of the app's PSS. Appium reaches that renderer through
chromedriver, and its DevTools passthrough (``/goog/cdp/execute``) runs
``HeapProfiler.collectGarbage`` and ``Performance.getMetrics`` in it, the same reading as
the web device's (JSHeapUsedSize after a forced garbage collection).

:class:`WebViewHeap` is the reader of the memory checks and ``memory_leak`` on android;
the app's own PSS (``AppPss``) is read beside it, into the evidence, and its ``with``
holds the background sampler off around the checks' reads. iOS WKWebViews have no
DevTools protocol: their memory is read by sysmontap (devicelab.samplers.ios_sysmon).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, Self

from devicelab.errors import DeviceLabError, ProbeFailed

__all__ = ["DevTools", "WebViewHeap"]

_MB = 1e6


class DevTools(Protocol):
    """What runs a DevTools command in the WebView: AppiumSession.cdp."""

    def cdp(self, command: str, params: Any = None) -> dict[str, Any]: ...


class WebViewHeap:
    """The WebView's JS heap in use, in MB on demand (see the module docstring).

    Calling it forces a garbage collection and returns JSHeapUsedSize / 10^6; raises
    ProbeFailed when DevTools does not answer or gives no JSHeapUsedSize. ``pss`` is read
    after each heap reading into :meth:`side_readings` (None, with the reason in
    ``side_notes``, when it cannot be read: a stand-in app is no process of the phone).
    """

    NAME = "heap"
    SOURCE = "cdp"
    HOW = (
        "JSHeapUsedSize of the app's WebView (DevTools Performance.getMetrics through "
        "Appium's chromedriver) after HeapProfiler.collectGarbage, before and after the "
        "load, with the data held by the app; the app's own PSS (dumpsys meminfo) beside "
        "it, the background sampler held off in between"
    )

    def __init__(self, session: DevTools, pss: Any = None) -> None:
        self.session = session
        self.pss = pss
        self._enabled = False
        self._side: dict[str, float | None] = {}
        self.side_notes: dict[str, str] = {}

    def __call__(self) -> float:
        self.session.cdp("HeapProfiler.collectGarbage")
        if not self._enabled:
            self.session.cdp("Performance.enable")
            self._enabled = True
        metrics = self.session.cdp("Performance.getMetrics").get("metrics") or []
        named = {m.get("name"): m.get("value") for m in metrics if isinstance(m, dict)}
        used = named.get("JSHeapUsedSize")
        if not isinstance(used, int | float):
            raise ProbeFailed(
                "the WebView's DevTools gave no JSHeapUsedSize",
                hint="the app's WebView must be debuggable (Capacitor: "
                "android.webContentsDebuggingEnabled) and the session in its context",
                command="Performance.getMetrics",
            )
        if self.pss is not None:
            try:
                self._side["pss"] = float(self.pss())
                self.side_notes.pop("pss", None)
            except DeviceLabError as exc:
                self._side["pss"], self.side_notes["pss"] = None, str(exc)
        return round(float(used) / _MB, 3)

    def side_readings(self) -> dict[str, float | None]:
        """The readings taken beside the last heap reading (``pss``: the app's PSS, MB)."""
        return dict(self._side)

    def __enter__(self) -> Self:
        if isinstance(self.pss, AbstractContextManager):
            self.pss.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.pss, AbstractContextManager):
            self.pss.__exit__(None, None, None)
