"""Start and stop the whole reference server from Python: tests, checks and the CLI.

Lifecycle: ``ReferenceServer(dsn)`` -> ``start()`` (a thread with its own event loop
serves on ``host:port``; port 0 picks a free one) -> ``url`` / ``anon_key`` /
``service_role_key`` -> ``stop()``. Also a context manager, sync (``with``) or async
(``async with``, serving on the running loop). A start given up on (Ctrl-C, the start
timeout) stops what it had started before ``start()`` raises: the caller has no server to
stop yet.

A storage root of its own is a temporary directory ``devicelab-storage-<pid>-<random>``,
locked (``flock``) by its server from start to stop. A server killed before it could
remove it (SIGKILL, a crash) left it behind; the next start of one in the same temporary
directory removes it: see :func:`_sweep_abandoned_roots` for what counts as abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web

from backend_checks.reference.addresses import usable_url
from backend_checks.reference.app import build_app, cleanup_failed_startup
from backend_checks.reference.context import ServerContext
from backend_checks.reference.realtime import SERVICE_KEY, RealtimeService
from devicelab.errors import BackendUnavailable, DeviceLabError, EnvironmentProblem, PortInUse

__all__ = ["PortInUse", "ReferenceServer"]

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0

_ROOT_PREFIX = "devicelab-storage-"
#: A root of ours: the pid of its server, then mkdtemp's eight random characters.
_ROOT_NAME = re.compile(r"devicelab-storage-(\d+)-[a-z0-9_]{8}")
#: A root younger than this is never swept: its server may not hold its lock yet.
_SWEEP_MIN_AGE_S = 60.0


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
        self._root_lock: int | None = None  # a descriptor of it, holding its flock
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
        self._serving: asyncio.Task[None] | None = None  # start(): the thread's one task
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` once started (an IPv6 host in brackets: ``http://[::1]:P``);
        on every address (``0.0.0.0``, ``::``), this machine's primary address instead, as
        a client reaches it. The tokens it issues name it so too (their ``iss``)."""
        return usable_url(self.host, self.port)

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
        cannot start, EnvironmentProblem when its storage folder cannot be made,
        RuntimeError when it serves already."""
        if self._runner is not None:
            raise RuntimeError(f"{self!r} is running already: stop it first")
        if self._own_root:
            self.ctx.storage_root, self._root_lock = _make_root()
            self._root_made = True
        try:
            if self._own_root:
                await asyncio.to_thread(_sweep_abandoned_roots, self.ctx.storage_root.parent)
            # One plain connection first: the pool retries a bad DSN for 15 s, and its
            # warnings quoted the DSN whole, password and all, on stderr.
            await asyncio.to_thread(_probe, self._dsn)
        except BaseException:
            self._remove_root()
            raise
        app = build_app(self.ctx)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        binding = False  # past the startup hooks: an OSError now is the listening socket's
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            binding = True
            await site.start()
        except BaseException as exc:
            # Cancelled too (a start given up on): what startup had opened is closed.
            await runner.cleanup()
            await cleanup_failed_startup(app)
            self._remove_root()
            if not isinstance(exc, Exception):
                raise
            if binding and isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"the reference server cannot listen on {self.host}:{self.port}: "
                    "the port is in use",
                    hint="stop what uses it, or pick another port (--port 0: any free one)",
                ) from exc
            if binding and isinstance(exc, OSError):  # not this machine's, no permission
                raise BackendUnavailable(
                    f"the reference server cannot listen on {self.host}:{self.port}: {exc}",
                    hint="listen on an address of this machine (127.0.0.1, 0.0.0.0), on a "
                    "port you may bind",
                ) from exc
            if isinstance(exc, OSError) and exc.filename is not None:
                # The startup hooks' only file work is making the storage folder.
                root = self.ctx.storage_root
                culprit = f" ({exc.filename})" if Path(exc.filename) != root else ""
                raise EnvironmentProblem(
                    f"the reference server cannot use its storage folder {root}:"
                    f" {exc.strerror or exc}{culprit}",
                    hint="make that path a folder this user may write (a part of it is a file,"
                    " or not writable); backend serve keeps it under DEVICELAB_STATE",
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
        if self._root_lock is not None:
            # Unlocked only once gone: a sweep never finds it unlocked while it serves.
            os.close(self._root_lock)
            self._root_lock = None

    async def _serve(self, ready: threading.Event) -> None:
        """Start, tell the starting thread, serve until cancelled (stop), then stop."""
        await self.astart()
        ready.set()
        try:
            await asyncio.get_running_loop().create_future()  # only a cancel ends it
        finally:
            await self.astop()

    def start(self) -> Self:
        """Serve from a background thread; returns once ready.

        Raises BackendUnavailable when the server does not come up; RuntimeError when it
        runs already (a second start orphaned the first, which nothing could stop). On any
        exception here (Ctrl-C too) the server is stopped first: its thread ends, its
        database connections close and its temporary storage root goes.
        """
        if self._runner is not None or (self._thread is not None and self._thread.is_alive()):
            raise RuntimeError(f"{self!r} is running already: stop() it first")
        ready = threading.Event()
        failure: list[BaseException] = []
        # The loop and its one task are made here, so that stop() can cancel the task
        # whenever it comes, even before the thread runs it. Cancelled, astart closes what
        # it had opened; a loop.stop() would have left it half done, its pool open.
        loop = asyncio.new_event_loop()
        serving = loop.create_task(self._serve(ready))

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serving)
            except asyncio.CancelledError:
                pass  # stopped, or its start given up on
            except BaseException as exc:
                if ready.is_set():
                    raise  # from stopping: the thread's excepthook reports it
                failure.append(exc)  # handed to the starting thread
            finally:
                ready.set()
                loop.close()

        self._loop, self._serving = loop, serving
        self._thread = threading.Thread(target=run, name="devicelab-reference", daemon=True)
        try:
            self._thread.start()
            if not ready.wait(_START_TIMEOUT_S):
                raise BackendUnavailable(
                    f"the reference server did not start in {_START_TIMEOUT_S:g} s",
                    hint="check that its PostgreSQL answers promptly (psql with the same "
                    "DSN), then start it again",
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
        except BaseException:
            # Ctrl-C or the timeout while it starts: the caller has no server to stop, and
            # the thread would have served on, with its pool and storage root.
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the background server and wait for its thread, at most 30 s (idempotent).
        A thread still busy after that stops when it can: its cancel stays pending."""
        loop, serving, thread = self._loop, self._serving, self._thread
        if loop is not None and serving is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # its loop closed: the thread is ending
                loop.call_soon_threadsafe(serving.cancel)
            thread.join(timeout=_STOP_TIMEOUT_S)
        self._loop = None
        self._serving = None
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


def _make_root() -> tuple[Path, int]:
    """A new temporary storage root, and a descriptor of it holding its lock (kept open
    until the root is removed). Raises OSError when it cannot be made."""
    root = Path(tempfile.mkdtemp(prefix=f"{_ROOT_PREFIX}{os.getpid()}-"))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # No locks on this file system (OSError): a sweep cannot take the lock either.
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return root, fd


def _sweep_abandoned_roots(parent: Path) -> None:
    """Remove from ``parent`` the storage roots of servers killed before they could.

    Conservative: a directory is removed only when all of these hold: its name is ours
    (``devicelab-storage-<pid>-<8 characters>``; older unnumbered roots and
    ``devicelab-storage-unstarted`` never match), it is a directory and not a link, this
    user owns it, nothing changed it for a minute, no process has its pid, and its lock is
    free. The lock is what a live server holds (the kernel drops it with the process,
    however it died), so a root is kept even when its pid is of another pid namespace
    (a container sharing this temporary directory); the pid keeps it on a file system
    where taking the lock proves nothing. Anything in doubt is left. Never raises.
    """
    for path in parent.glob(f"{_ROOT_PREFIX}*"):
        match = _ROOT_NAME.fullmatch(path.name)
        if match is None or _pid_alive(int(match[1])):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # gone already, a link, a file, or not ours to open
        try:
            info = os.fstat(fd)
            if info.st_uid == os.getuid() and time.time() - info.st_mtime >= _SWEEP_MIN_AGE_S:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: its server is alive
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    """Whether a process has ``pid`` (another user's too); True when in doubt."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: alive, not ours; a pid out of range
        return True
    return True
