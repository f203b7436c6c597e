"""The JS heap of the app's WebView on an Android phone, through DevTools.

An Android WebView runs the page in a renderer process of its own (Android 8+, always on
11+), which ``dumpsys meminfo <package>`` does not count: the data the app loads lives
in the JS heap there, out of the app's PSS. Appium reaches that renderer through
chromedriver, and its DevTools passthrough (``/goog/cdp/execute``) takes the web
device's reading there (devicelab.platforms.devtools: JSHeapUsedSize after a forced
garbage collection).

:class:`WebViewHeap` is the reader of the memory checks and ``memory_leak`` on android.
The memory checks also ask it for the app's own PSS (``AppPss``) beside each reading,
into the evidence, and its ``with`` holds the background sampler off around their reads.
iOS WKWebViews have no DevTools protocol: their memory is read by sysmontap
(devicelab.samplers.ios_sysmon).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Self

from devicelab.errors import DeviceLabError
from devicelab.platforms.devtools import JsHeap, Send

__all__ = ["WebViewHeap"]


class WebViewHeap:
    """The WebView's JS heap in use, in MB on demand (see the module docstring).

    ``send`` runs a DevTools command in the WebView (``AppiumSession.cdp``). Calling it
    returns JSHeapUsedSize / 10^6 after a forced garbage collection; raises ProbeFailed
    when DevTools does not answer or gives no JSHeapUsedSize. ``pss`` is the app's PSS
    reader, read by :meth:`side_readings`.
    """

    NAME = "heap"
    HOW = (
        "JSHeapUsedSize of the app's WebView (DevTools Performance.getMetrics through "
        "Appium's chromedriver) after HeapProfiler.collectGarbage, before and after the "
        "load, with the data held by the app; the app's own PSS (dumpsys meminfo) beside "
        "it, the background sampler held off in between"
    )

    def __init__(self, send: Send, pss: Any = None) -> None:
        self.heap = JsHeap(send)
        self.pss = pss
        #: Why a side reading is None (``pss``: no process of the app on the phone...).
        self.side_notes: dict[str, str] = {}

    def __call__(self) -> float:
        return round(self.heap.read()["used"] / 1e6, 3)

    def side_readings(self) -> dict[str, float | None]:
        """The app's PSS in MB now (``{"pss": MB}``; None, with the reason in
        ``side_notes``, when it cannot be read: a stand-in app is no process of the
        phone); {} without a PSS reader."""
        if self.pss is None:
            return {}
        try:
            value: float | None = float(self.pss())
            self.side_notes.pop("pss", None)
        except DeviceLabError as exc:
            value, self.side_notes["pss"] = None, str(exc)
        return {"pss": value}

    def __enter__(self) -> Self:
        if isinstance(self.pss, AbstractContextManager):
            self.pss.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.pss, AbstractContextManager):
            self.pss.__exit__(None, None, None)
