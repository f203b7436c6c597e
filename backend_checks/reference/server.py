"""Start and stop the whole reference server from Python: tests, checks and the CLI.

Lifecycle: ``ReferenceServer(dsn)`` -> ``start()`` (a thread with its own event loop
serves on ``host:port``; port 0 picks a free one) -> ``url`` / ``anon_key`` /
``service_role_key`` -> ``stop()``. Also a context manager, sync (``with``) or async
(``async with``, serving on the running loop).
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web

from backend_checks.reference.app import build_app
from backend_checks.reference.context import ServerContext
from backend_checks.reference.realtime import SERVICE_KEY, RealtimeService
from devicelab.errors import BackendUnavailable, DeviceLabError, PortInUse

__all__ = ["PortInUse", "ReferenceServer"]

_START_TIMEOUT_S = 30.0


class ReferenceServer:
    """A Supabase-compatible server over the PostgreSQL at ``dsn``.

    ``storage_root`` defaults to a temporary directory removed on stop; ``jwt_secret``
    defaults to a new random one (so keys differ per server unless one is given), and
    ``keys_issued_at`` is the ``iat`` of the anon and service-role keys (now when None;
    a fixed one with a kept secret gives the same keys at every start);
    ``pool_max_size`` caps the database connections of REST, Auth and Storage.
    """

    def __init__(
        self,
        dsn: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_root: Path | None = None,
        jwt_secret: str | None = None,
        pool_max_size: int = 20,
        keys_issued_at: int | None = None,
    ) -> None:
        self._dsn = dsn
        self._own_root = storage_root is None
        self._root_made = False  # our temporary storage root exists (made at start)
        # Made at start (a temporary one of its own each time): a server built but never
        # started left a directory behind for every one.
        root = storage_root or Path(tempfile.gettempdir(), "devicelab-storage-unstarted")
        self.ctx = ServerContext.create(
            dsn, root, jwt_secret=jwt_secret, keys_issued_at=keys_issued_at
        )
        self.ctx.pool_max_size = pool_max_size
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` once started (an IPv6 host in brackets: ``http://[::1]:P``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def anon_key(self) -> str:
        """The anon API key (a JWT with role anon)."""
        return self.ctx.anon_key

    @property
    def service_role_key(self) -> str:
        """The service-role API key (a JWT with role service_role); keep it out of logs."""
        return self.ctx.service_role_key

    def __repr__(self) -> str:
        return f"ReferenceServer(url={self.url!r})"

    async def astart(self) -> None:
        """Serve on the running event loop. Raises BackendUnavailable (PortInUse) when it
        cannot start, RuntimeError when it serves already."""
        if self._runner is not None:
            raise RuntimeError(f"{self!r} is running already: stop it first")
        if self._own_root:
            self.ctx.storage_root = Path(tempfile.mkdtemp(prefix="devicelab-storage-"))
            self._root_made = True
        # One plain connection first: the pool retries a bad DSN for 15 s, and its
        # warnings quoted the DSN whole, password and all, on stderr.
        try:
            await asyncio.to_thread(_probe, self._dsn)
        except BaseException:
            self._remove_root()
            raise
        app = build_app(self.ctx)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except Exception as exc:
            await runner.cleanup()
            self._remove_root()
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"the reference server cannot listen on {self.host}:{self.port}: "
                    "the port is in use",
                    hint="stop what uses it, or pick another port (--port 0: any free one)",
                ) from exc
            if isinstance(exc, OSError):  # an address not on this machine, no permission
                raise BackendUnavailable(
                    f"the reference server cannot listen on {self.host}:{self.port}: {exc}",
                    hint="listen on an address of this machine (127.0.0.1, 0.0.0.0), on a "
                    "port you may bind",
                ) from exc
            raise BackendUnavailable(
                f"the reference server could not start: {type(exc).__name__}: {exc}",
                hint="check that PostgreSQL is running and the DSN is right",
            ) from exc
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        self.ctx.public_url = self.url

    async def astop(self) -> None:
        """Stop serving and close the pool (idempotent)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            # Before aiohttp's cleanup, which cuts every connection first: the sockets get
            # a close frame (1001 going away), not a dropped connection (1006).
            service = self.ctx.extras.get(SERVICE_KEY)
            if isinstance(service, RealtimeService):
                await service.close_sockets(runner.app)
            await runner.cleanup()
        self._remove_root()

    def _remove_root(self) -> None:
        """Remove the temporary storage root this server made (never a given one)."""
        if self._own_root and self._root_made:
            shutil.rmtree(self.ctx.storage_root, ignore_errors=True)
            self._root_made = False

    def start(self) -> Self:
        """Serve from a background thread; returns once ready.

        Raises BackendUnavailable when the server does not come up; RuntimeError when it
        runs already (a second start orphaned the first, which nothing could stop).
        """
        if self._runner is not None or (self._thread is not None and self._thread.is_alive()):
            raise RuntimeError(f"{self!r} is running already: stop() it first")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.astart())
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.astop())
                loop.close()

        self._thread = threading.Thread(target=run, name="devicelab-reference", daemon=True)
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_S):
            raise BackendUnavailable(
                f"the reference server did not start in {_START_TIMEOUT_S:g} s",
                hint="check that its PostgreSQL answers promptly (psql with the same DSN), "
                "then start it again",
            )
        if failure:
            self._thread.join()
            error = failure[0]
            if isinstance(error, DeviceLabError | RuntimeError):
                raise error
            raise BackendUnavailable(
                f"the reference server could not start: {error}",
                hint="the temporary directory (TMPDIR) must be writable, PostgreSQL must "
                "answer at the DSN; fix the cause named, then start it again",
            ) from error
        return self

    def stop(self) -> None:
        """Stop the background server and wait for its thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
        self._loop = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()


def _probe(dsn: str) -> None:
    """Connect to ``dsn`` once and close. Raises what :func:`backend_checks.db.connect`
    raises: one line, the password redacted."""
    from backend_checks.db import connect

    connect(dsn).close()
