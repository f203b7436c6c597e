"""The web device: the app's web build in Chromium, driven through Playwright.

Lifecycle of :class:`WebDevice`::

    create()   start Playwright, launch Chromium (headless, through the shaped proxy), one
               page, its CPU slowed down when the inventory says (``cpu_throttle``)
    open(url)  load the app
    evaluate() run a JS function in the page: the channel devicelab.harness talks over
    heap_used_mb()  JSHeapUsedSize after a garbage collection (CDP Performance.getMetrics)
    info()     the device as results.json names it
    close()    close the browser and stop Playwright (idempotent; raises only a Ctrl-C
               that lands in it, once the rest is closed)

One web device is open at a time in a process (a run drives one): Playwright's sync API
runs one instance per thread, and a second create() in the same thread failed deep inside
Playwright ("using Playwright Sync API inside the asyncio loop"). create() refuses a second
one up front (BadInput), from whichever thread; close() frees the slot.

A Ctrl-C (or a SIGTERM the CLI turns into one) during create() or close() stops Chromium
and Playwright's driver and prints nothing of theirs: see _signals_between_loop_steps and
_quiet_after_stop.

Chromium sends loopback traffic around any proxy by default; the app and the reference
backend live on 127.0.0.1 here, so the browser is launched with
``routing.playwright_proxy`` (Playwright passes it on as ``--proxy-server`` and
``--proxy-bypass-list=<-loopback>``), which removes that implicit rule: every request and
websocket crosses the shaped link.

:class:`StaticApp` serves a built app folder (``capacitor-harness/app/dist``) on a free
loopback port, for runs where nothing serves the inventory's ``app.url``.

Playwright's errors are translated here: a browser that cannot start is ToolMissing or
DeviceUnreachable; a page that fails to load or a script that throws is ProbeFailed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import logging
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Self

from devicelab.errors import BadInput, DeviceUnreachable, ProbeFailed, ToolMissing, first_line
from devicelab.models import Device, DeviceInfo
from devicelab.platforms.devtools import JsHeap
from devicelab.platforms.routing import playwright_proxy

__all__ = [
    "CHROMIUM_FLAGS",
    "DEFAULT_BROWSER",
    "StaticApp",
    "WebDevice",
    "answers",
    "check_browser",
]

logger = logging.getLogger("devicelab.platforms.web")

DEFAULT_BROWSER = "/usr/bin/chromium"
#: Flags for a quiet, reproducible browser: no sandbox (labs run as root), no GPU, and as
#: little background traffic of its own on the shaped link as flags allow (updates, sync;
#: Chromium 156 still sends an update check and sign-in probes: docs/netshape.md).
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
_LOAD_TIMEOUT_MS = 60_000
# DevTools stops answering when the page or the browser is gone (a crash, a kill).
_CDP_HINT = "the page or Chromium went away (a crash?): run again; `devicelab doctor` checks it"

# The signals that stop a run: Ctrl-C, and SIGTERM and SIGHUP as devicelab's CLI takes them.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The web device open in this process (empty: none), guarded by _OPEN_LOCK.
_OPEN: list[WebDevice] = []
_OPEN_LOCK = threading.Lock()


def check_browser(device: Device) -> None:
    """Raise ToolMissing when the device's browser (``browser:`` in the inventory, else
    DEFAULT_BROWSER) is not there: before a run starts anything else, and on create()."""
    executable = device.browser or DEFAULT_BROWSER
    if not Path(executable).is_file():
        raise ToolMissing(
            f"the browser {executable}",
            hint="apt-get install chromium (./dev/setup does it), or set browser: "
            "in inventory.yaml",
        )


class WebDevice:
    """Chromium with one page, its traffic through ``proxy_url`` (None: direct)."""

    def __init__(self, device: Device, *, proxy_url: str | None, headless: bool = True) -> None:
        self.device = device
        self.proxy_url = proxy_url
        self.headless = headless
        self.executable = device.browser or DEFAULT_BROWSER
        self._manager: Any = None
        self._playwright: Any = None
        self._browser: Any = None
        self._page: Any = None
        self._cdp: Any = None
        self._heap: JsHeap | None = None
        self.browser_version = ""

    def _cdp_session(self) -> Any:
        """The page's CDP session (opened once)."""
        if self._cdp is None:
            self._cdp = self._page.context.new_cdp_session(self._page)
        return self._cdp

    def create(self) -> Self:
        """Launch the browser and open a blank page. Raises BadInput when a web device is
        already open in this process, ToolMissing when the browser is not installed,
        DeviceUnreachable when it does not start; after a Ctrl-C (or SIGTERM) on the way,
        closes what started and raises the KeyboardInterrupt."""
        from playwright.sync_api import Error as PlaywrightError

        self._claim()
        try:
            with _signals_between_loop_steps():
                self._start()
        except BaseException as exc:
            # A Ctrl-C in launch() left Chromium running and Playwright's event loop set
            # in this thread, so every later asyncio.run() of the process failed.
            self.close()
            if isinstance(exc, PlaywrightError):
                raise DeviceUnreachable(
                    f"Chromium did not start: {first_line(exc)}",
                    hint=f"run {self.executable} --headless --no-sandbox --version by hand",
                    command=self.executable,
                ) from exc
            raise
        return self

    def _start(self) -> None:
        check_browser(self.device)
        from playwright.sync_api import sync_playwright

        proxy = playwright_proxy(self.proxy_url) if self.proxy_url else None
        # Kept before start(): close() stops the driver through it, also when start() failed.
        self._manager = sync_playwright()
        # Playwright's stop() fails on a driver whose start was cut (its pipe is not there
        # yet: the driver stays), so a Ctrl-C waits for the start, a fraction of a second.
        with _signals_between_loop_steps(hold_first=True):
            self._playwright = self._manager.start()
        self._browser = self._playwright.chromium.launch(
            executable_path=self.executable,
            headless=self.headless,
            args=list(CHROMIUM_FLAGS),
            proxy=proxy,
        )
        self.browser_version = str(self._browser.version)
        self._page = self._browser.new_page()
        if self.device.cpu_throttle:
            # The story's "4x CPU slowdown (typical mobile)": DevTools' own throttling of
            # the renderer's main thread, for this page and its navigations.
            self._cdp_session().send(
                "Emulation.setCPUThrottlingRate", {"rate": self.device.cpu_throttle}
            )

    def _claim(self) -> None:
        """Take the process's one web device slot. Raises BadInput when it is taken."""
        with _OPEN_LOCK:
            if _OPEN:
                raise BadInput(
                    "a web device is already open in this process (one at a time: "
                    "Playwright's sync API)",
                    hint="close the open one first (`with WebDevice(...) as web:` closes "
                    "it at the end), or do both jobs in the page of the open one",
                )
            _OPEN.append(self)

    def open(self, url: str) -> None:
        """Load ``url`` in the page and wait for its load event. Raises ProbeFailed."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            response = self._page.goto(url, wait_until="load", timeout=_LOAD_TIMEOUT_MS)
        except PlaywrightError as exc:
            raise ProbeFailed(
                f"the app did not load from {url}: {first_line(exc)}",
                hint="is the app served there, and does the proxy reach it?",
            ) from exc
        if response is not None and not response.ok:
            raise ProbeFailed(
                f"the app at {url} answered HTTP {response.status}",
                hint="build it: cd capacitor-harness && npm ci && npm run build",
            )

    def evaluate(self, source: str, arg: Any = None) -> Any:
        """Run the JS function ``source`` with ``arg`` in the page; returns its (awaited)
        JSON result. Raises ProbeFailed when the script throws or the page is gone."""
        from playwright.sync_api import Error as PlaywrightError

        if self._page is None:
            raise ProbeFailed("the browser is not running", hint="call create() first")
        try:
            return self._page.evaluate(source, arg)
        except PlaywrightError as exc:
            raise ProbeFailed(
                f"the page's script failed: {first_line(exc)}",
                hint="the page threw it, or crashed or navigated away: run again; if it "
                "keeps failing, open the app's URL in Chromium and read its console",
            ) from exc

    def cdp(self, command: str) -> dict[str, Any]:
        """Run the DevTools ``command`` in the page; returns its result. Raises
        ProbeFailed when CDP does not answer."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            return dict(self._cdp_session().send(command))
        except PlaywrightError as exc:
            raise ProbeFailed(f"CDP {command} failed: {first_line(exc)}", hint=_CDP_HINT) from exc

    def heap_used_mb(self) -> float:
        """The page's JS heap in use (MB, 10^6 bytes) after a forced garbage collection.

        Raises ProbeFailed when CDP does not answer."""
        if self._heap is None:
            self._heap = JsHeap(self.cdp)
        return self._heap.read()["used"] / 1e6

    def info(self) -> DeviceInfo:
        """The device for results.json (the OS names the browser version once started)."""
        os_name = self.device.os
        if self.browser_version:
            os_name = f"{os_name}, Chromium {self.browser_version}"
        model = self.device.model
        if self.device.cpu_throttle:
            model = f"{model}, CPU {self.device.cpu_throttle:g}x slower (CDP)"
        return DeviceInfo(id=self.device.id, platform="web", model=model, os=os_name)

    def close(self) -> None:
        """Close the browser, stop Playwright and free the process's web device slot, also
        after a create() that failed. Logs what fails and goes on; raises only a Ctrl-C
        that lands in it, once the rest is closed."""
        browser, manager = self._browser, self._manager
        self._browser = self._page = self._cdp = self._playwright = self._manager = None
        self._heap = None
        if manager is not None:
            _quiet_after_stop(manager)
        steps = [("browser", browser.close if browser else None),
                 ("playwright", manager.__exit__ if manager else None)]  # fmt: skip
        interrupt: BaseException | None = None
        try:
            with _signals_between_loop_steps():
                for what, step in steps:
                    if step is None:
                        continue
                    try:
                        step()
                    except Exception as exc:  # teardown goes on whatever happened
                        logger.warning("closing the %s failed: %s", what, first_line(exc))
                    except BaseException as exc:  # a Ctrl-C: Playwright is stopped first
                        interrupt = interrupt or exc
        finally:
            with _OPEN_LOCK:
                if self in _OPEN:
                    _OPEN.remove(self)
        if interrupt is not None:
            raise interrupt

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _signals_between_loop_steps(*, hold_first: bool = False) -> Iterator[None]:
    """Within the block, a Ctrl-C (SIGINT, or SIGTERM and SIGHUP when a Python handler
    takes them: devicelab.sigterm_as_interrupt) that lands while Playwright's event loop
    runs in this thread is handled between two steps of the loop, not inside one; with
    ``hold_first``, the first one is handled at the end of the block (a second one as
    without it: a way out of a start that hangs).

    The handler's KeyboardInterrupt, raised inside a task, ended that task with it: when
    it was the driver's reader, Playwright took the driver for gone and left it and
    Chromium running. Raised from a callback of its own, the interrupt leaves the loop as
    one that lands while the loop waits does, and Playwright raises it in the sync call
    that waits, able to stop later. Elsewhere (Python code outside the loop) the handler
    runs at once. A signal put off and not handled by the end of the block is raised
    again then, unless a KeyboardInterrupt ends the block already. Nothing is installed
    outside the main thread (no signal reaches another) or for a signal without a Python
    handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before: dict[int, Callable[[int, FrameType | None], Any]] = {
        int(s): h for s in _STOP_SIGNALS if callable(h := signal.getsignal(s))
    }
    # Each signal put off: its number, the loop's handle of it (None: held), and whether
    # it was handled (a list, so that the callback can say so).
    put_off: list[tuple[int, asyncio.Handle | None, list[bool]]] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if hold_first and not put_off:
            put_off.append((signum, None, []))
        elif (loop := _stepping_loop(frame)) is None:
            before[signum](signum, frame)
        else:
            handled: list[bool] = []

            def deliver() -> None:
                handled.append(True)
                before[signum](signum, None)

            put_off.append((signum, loop.call_soon_threadsafe(deliver), handled))

    for signum in before:
        signal.signal(signum, handler)
    ending: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        ending = exc
        raise
    finally:
        for signum, previous in before.items():
            if signal.getsignal(signum) is handler:  # a handler may have changed it (SIG_IGN)
                signal.signal(signum, previous)
        for _, handle, _ in put_off:
            if handle is not None:
                handle.cancel()  # else Playwright's next call would raise it, any time later
        if not isinstance(ending, KeyboardInterrupt):
            for signum, _, handled in put_off:
                if not handled:
                    signal.raise_signal(signum)  # the handler of before runs right here


def _stepping_loop(frame: FrameType | None) -> asyncio.AbstractEventLoop | None:
    """The asyncio loop whose step (``_run_once``) ``frame`` runs in, if any."""
    while frame is not None:
        if frame.f_code.co_name == "_run_once":
            loop = frame.f_locals.get("self")
            if isinstance(loop, asyncio.AbstractEventLoop):
                return loop
        frame = frame.f_back
    return None


def _quiet_after_stop(manager: Any) -> None:
    """Keep Playwright's event loop quiet about the calls that its stop fails.

    An interrupt that cuts sync_playwright().start() leaves the driver's initialize in
    flight; Playwright's stop fails it ("Target page, context or browser has been closed")
    and cancels the task that awaited it, so asyncio printed "Task exception was never
    retrieved" and a traceback, before devicelab's own message. (A Ctrl-C now waits for
    the start; a test's timeout, or a second Ctrl-C, still cuts it.) Nobody waits for such
    calls any more: they are logged at debug. Anything else goes to asyncio's default
    handler."""
    from playwright.sync_api import Error as PlaywrightError

    # The manager's own loop (a private attribute; a manager without one stays as it is).
    loop = getattr(manager, "_loop", None)
    if not isinstance(loop, asyncio.AbstractEventLoop):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), PlaywrightError):
            logger.debug("Playwright, stopping: %s: %s", context.get("message"),
                         first_line(context["exception"]))  # fmt: skip
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("app server: " + format, *args)


class StaticApp:
    """Serves the folder ``root`` on ``http://127.0.0.1:<free port>/`` from a thread.

    Lifecycle: ``start()`` -> ``url`` -> ``stop()`` (idempotent).
    """

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        self.host = host
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The app's URL once started."""
        if self._server is None:
            return ""
        return f"http://{self.host}:{self._server.server_address[1]}/"

    def start(self) -> Self:
        """Serve; returns at once. Raises ProbeFailed when ``root`` holds no index.html."""
        if not (self.root / "index.html").is_file():
            raise ProbeFailed(
                f"no app build in {self.root}",
                hint="run ./dev/setup (or: cd capacitor-harness && npm ci && npm run build)",
            )
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self._server = http.server.ThreadingHTTPServer((self.host, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="devicelab-app", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether ``url`` answers HTTP 2xx right now (directly, not through any proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False
