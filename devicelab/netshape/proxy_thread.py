"""ShapedProxy's thread mode, the parts that talk to mitmproxy's loop from outside it.

``ShapedProxy`` (``proxy``) runs mitmproxy on its own event loop in a thread; these are
the pieces it hands to that loop or runs against it: the addon that reports the listening
address (or why it could not listen), the log filter that keeps mitmproxy's own line about
that failure out, and a bounded wait for a coroutine run in the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

from devicelab.errors import EnvironmentProblem

__all__ = ["LISTEN_ERRORS", "ListenErrorFilter", "Ready", "run_in", "why_no_listen"]


class ListenErrorFilter(logging.Filter):
    """Drops mitmproxy's own log line about a port it cannot bind: ``start()`` raises the
    same failure as one line of ours (mitmproxy's adds advice about its own CLI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for mitmproxy's "failed to listen" line, True for any other."""
        return "failed to listen" not in record.getMessage()


#: The one filter added to mitmproxy's proxyserver logger (adding it again is a no-op).
LISTEN_ERRORS = ListenErrorFilter()


def run_in(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, coro: Any, *, timeout: float
) -> bool:
    """Run ``coro`` in ``loop`` (served by ``thread``) and wait for it, but no longer than
    the loop lives. Returns True only when it may still be running in the loop after
    ``timeout`` seconds; its own errors are not raised."""
    try:
        future = asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:  # the loop is closed
        return False
    deadline = time.monotonic() + timeout
    while not future.done():
        if not thread.is_alive():
            return False  # the loop ended with it still queued
        if time.monotonic() > deadline:
            return True
        with contextlib.suppress(Exception):  # a timeout, or its own error: done either way
            future.result(timeout=0.05)
    return False


class Ready:
    """Reports the listening address (or the failure to listen) once mitmproxy runs."""

    def __init__(self, ready: Future[tuple[str, int]], host: str, port: int) -> None:
        self._ready, self._host, self._port = ready, host, port

    def running(self) -> None:
        """mitmproxy's ``running`` hook: set the future to (host, real port), or to an
        EnvironmentProblem saying why it could not listen (and shut mitmproxy down)."""
        from mitmproxy import ctx

        master: Any = ctx.master
        proxyserver = master.addons.get("proxyserver")
        addrs = proxyserver.listen_addrs()
        if addrs:
            self._ready.set_result((self._host, int(addrs[0][1])))
            return
        errors = [why_no_listen(s.last_exception) for s in proxyserver.servers if s.last_exception]
        self._ready.set_exception(
            EnvironmentProblem(
                f"cannot listen on {self._host}:{self._port}: {'; '.join(errors) or 'unknown'}",
                hint="pick a free port (0 picks one) and a local address",
            )
        )
        master.shutdown()


def why_no_listen(exc: BaseException) -> str:
    """The reason a server could not listen, in a few words ("address already in use")."""
    if isinstance(exc, socket.gaierror):  # its errno is getaddrinfo's, not the OS's
        return f"no such address ({exc.strerror or exc})".lower()
    if isinstance(exc.__cause__, socket.gaierror):  # mitmproxy's OSError copies that errno
        return why_no_listen(exc.__cause__)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    if isinstance(exc.__cause__, OSError):  # mitmproxy's wrapper around asyncio's error
        return why_no_listen(exc.__cause__)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
