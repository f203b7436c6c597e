"""An asyncio server on a loop thread of its own: the lifecycle the fakes share.

Lifecycle: ``start()`` runs a new event loop in a daemon thread, awaits the subclass's
``_listen()`` there and returns self once listening (raises what binding raised);
``stop()`` closes the server and every open peer, stops the loop and joins the thread,
and never raises (teardown logs and goes on). Also a context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Self

__all__ = ["BackgroundServer"]

logger = logging.getLogger("devicelab.testing")


class BackgroundServer:
    """Subclasses set ``NAME``, implement ``_listen`` (setting ``_server``) and list the
    writers of their open peers in ``_open_writers``."""

    NAME = "server"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    async def _listen(self) -> None:
        raise NotImplementedError

    def _open_writers(self) -> list[asyncio.StreamWriter]:
        return []

    def _stopped(self) -> None:
        """Called once the loop has stopped (e.g. to remove a socket file)."""

    def start(self) -> Self:
        """Listen in a background thread; returns self once listening.

        Raises OSError when the address cannot be bound.
        """
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=self.NAME, daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._open_writers():
            writer.close()
        # Peers still being served (a TLS stream may not see its close at once) end here,
        # not as tasks destroyed with the loop.
        current = asyncio.current_task()
        serving = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        for task in serving:
            task.cancel()
        if serving:
            await asyncio.wait(serving, timeout=2)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)

    def stop(self) -> None:
        """Drop every peer and stop listening; never raises."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        except Exception as exc:  # teardown logs and goes on
            logger.warning("%s did not close cleanly: %s", self.NAME, exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
        self._stopped()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
