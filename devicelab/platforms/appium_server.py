"""A local Appium 3 server from this checkout's ``tools/appium``.

:class:`AppiumServer` starts Appium 3 from ``tools/appium`` (npm ci there; APPIUM_HOME is
that folder, so the drivers are the npm packages of its lockfile), on a free loopback
port with ``--base-path /``, logging to a file. Lifecycle: ``start()`` -> ``url`` ->
``stop()`` (its whole process group: appium and the drivers it started).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from devicelab.errors import DeviceUnreachable, ToolMissing
from devicelab.platforms.orphan_guard import guarded
from devicelab.ports import free_port

__all__ = [
    "AppiumServer",
    "appium_home",
    "free_port",
    "installed",
    "installed_drivers",
    "server_status",
]

logger = logging.getLogger("devicelab.platforms.appium")


def appium_home() -> Path:
    """APPIUM_HOME for a local server: $DEVICELAB_APPIUM_HOME, else ``tools/appium`` of the
    checkout devicelab runs from (its npm packages are the server and the drivers)."""
    if env := os.environ.get("DEVICELAB_APPIUM_HOME"):
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "tools" / "appium"


def installed(home: Path) -> str:
    """The version of the appium package installed in APPIUM_HOME ``home`` ("" if none)."""
    try:
        manifest = json.loads((home / "node_modules" / "appium" / "package.json").read_text())
    except (OSError, ValueError):
        return ""
    if not (home / "node_modules" / ".bin" / "appium").exists():
        return ""
    return str(manifest.get("version", "?"))


def installed_drivers(home: Path) -> dict[str, str]:
    """The drivers installed in APPIUM_HOME ``home``: automationName (lower case) ->
    ``package version``. Appium 3 counts every dependency of ``home``'s package.json whose
    own package.json has an ``appium.driverName`` (devicelab's tools/appium is such a
    home: npm ci installs the server and its drivers)."""
    try:
        wanted = json.loads((home / "package.json").read_text()).get("dependencies", {})
    except (OSError, ValueError):
        return {}
    drivers = {}
    for package in wanted:
        try:
            manifest = json.loads((home / "node_modules" / package / "package.json").read_text())
        except (OSError, ValueError):
            continue
        meta = manifest.get("appium")
        if isinstance(meta, dict) and meta.get("driverName"):
            name = str(meta.get("automationName") or meta["driverName"]).lower()
            drivers[name] = f"{package} {manifest.get('version', '?')}"
    return drivers


def server_status(url: str, timeout_s: float = 3.0) -> str:
    """What answers at the Appium server ``url`` (its ``/status``, directly, no proxy):
    "appium" (HTTP 200 with a JSON ``value``), "nothing" (refused, unreachable, timed
    out), or what else answered (e.g. "HTTP 404", "HTTP 200 that is not Appium's JSON")."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    # A cloud grid's user:password in the URL: urllib sends none of it (and reads the
    # host as "user:password@host"), so it goes as Basic auth, the URL without it.
    parts = urllib.parse.urlsplit(url)
    headers = {}
    if parts.username is not None:
        who = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(who.encode()).decode()
        netloc = parts.netloc.rsplit("@", 1)[1]
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    request = urllib.request.Request(url.rstrip("/") + "/status", headers=headers)
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body = response.read(65536)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, urllib.error.URLError, ValueError):
        return "nothing"
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "value" in answer:
        return "appium"
    return "HTTP 200 that is not Appium's JSON"


#: How many free ports ``AppiumServer.start`` tries when it picks one (port 0).
_PICKS = 3


class AppiumServer:
    """A local Appium 3 server (see the module docstring).

    ``home`` is APPIUM_HOME (default :func:`appium_home`): the folder whose npm packages
    are appium and its drivers. ``port`` 0 picks a free one. The log goes to ``log_file``
    (default ``<home>/appium.log``).
    """

    def __init__(
        self,
        home: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_file: Path | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.home = home or appium_home()
        self.host = host
        self.port = port
        self.log_file = log_file or self.home / "appium.log"
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def url(self) -> str:
        """The server's URL (base path /)."""
        return f"http://{self.host}:{self.port}"

    @property
    def executable(self) -> Path:
        """The appium launcher of ``home``'s npm packages."""
        return self.home / "node_modules" / ".bin" / "appium"

    def start(self) -> Self:
        """Start the server and wait until ``/status`` says ready; returns self.

        Raises ToolMissing when appium is not installed in ``home`` (./dev/setup does it),
        DeviceUnreachable when it exits or never gets ready (the log's last lines say why).
        """
        if not self.executable.exists():
            raise ToolMissing(
                f"Appium in {self.home}",
                hint="run ./dev/setup (or: cd tools/appium && npm ci)",
            )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.port != 0:
            return self._start_on_port()
        # A port picked free can be taken in the seconds node needs to listen (by another
        # program's outgoing connection: the kernel hands out the same range): pick again.
        for attempt in range(1, _PICKS + 1):
            self.port = free_port(self.host)
            try:
                return self._start_on_port()
            except DeviceUnreachable as exc:
                if "EADDRINUSE" not in exc.message or attempt == _PICKS:
                    raise
                logger.info(
                    "port %d was taken by another program before Appium listened on it: "
                    "picking another (try %d of %d)",
                    self.port, attempt + 1, _PICKS,
                )  # fmt: skip
        raise AssertionError("unreachable")  # the loop returns or raises

    def _start_on_port(self) -> Self:
        """Start on ``self.port`` (see ``start``); raises as ``start`` does."""
        env = {**os.environ, "APPIUM_HOME": str(self.home)}
        # Guarded: a run killed outright (no teardown) takes its Appium server with it.
        # No --log: Appium's file log loses its last lines when it exits at start (the
        # EADDRINUSE that says why) and wrote over the console in the same file; the
        # console, with timestamps, is the one log. Session discovery (GET
        # /appium/sessions) finds a session a run left while Appium was starting it, by
        # its claim (devicelab.platforms.appium_orphans); it lists sessions, nothing more.
        command = guarded([
            str(self.executable), "server",
            "--address", self.host, "--port", str(self.port), "--base-path", "/",
            "--log-no-colors", "--log-timestamp", "--log-level", "debug",
            "--allow-insecure", "*:session_discovery",
        ])  # fmt: skip
        with self._starting(), self.log_file.open("ab") as sink:
            self._log_start = sink.tell()  # this start's lines, not an earlier run's
            self._process = subprocess.Popen(
                command, env=env, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            self._wait_ready()
        logger.info("appium %s listening on %s", self._process.pid, self.url)
        return self

    @contextlib.contextmanager
    def _starting(self) -> Iterator[None]:
        """One Appium of ``home`` starting at a time: a starting Appium rewrites its
        extension manifest (``node_modules/.cache/appium/extensions.yaml``) in place when
        the installed drivers changed, and another starting meanwhile read it half
        written ("invalid YAML") and exited."""
        from devicelab.files import locked_folder

        with locked_folder(self.home):  # another start is ready within seconds
            yield

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                why = self._why_exited()
                self._process = None
                taken = "EADDRINUSE" in why
                raise DeviceUnreachable(
                    f"appium exited at start: {why}",
                    hint=(
                        f"another program listens on {self.host}:{self.port}: stop it, or "
                        "point appium.url at a free port; "
                        if taken
                        else ""
                    )
                    + f"read {self.log_file}",
                    command=str(self.executable),
                )
            try:
                with opener.open(f"{self.url}/status", timeout=2) as response:
                    answered = response.status == 200
            except (OSError, urllib.error.URLError):
                answered = False
            if answered and self._listening() is False:
                # Another server answers on the port ours is failing to take (two runs
                # that started one on the same port used the first's, which the first
                # run's end then stopped under the second).
                self.stop()
                raise DeviceUnreachable(
                    f"appium exited at start: listen EADDRINUSE: address already in use "
                    f"{self.host}:{self.port} (another server answers there)",
                    hint=f"another program listens on {self.host}:{self.port}: stop it, or "
                    f"point appium.url at it; read {self.log_file}",
                    command=str(self.executable),
                )
            if answered:
                return
            time.sleep(0.2)
        self.stop()
        raise DeviceUnreachable(
            f"appium did not answer on {self.url} within {self.start_timeout_s:g} s",
            hint=f"read {self.log_file}",
            command=str(self.executable),
        )

    def _listening(self) -> bool | None:
        """Whether our process or one of its descendants (node, under the orphan guard)
        listens on our port; None when that cannot be told (psutil is refused)."""
        import psutil

        assert self._process is not None
        try:
            root = psutil.Process(self._process.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        for process in family:
            try:
                sockets = process.net_connections(kind="tcp")
            except psutil.AccessDenied:
                return None
            except psutil.Error:
                continue  # it ended meanwhile
            if any(
                s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == self.port
                for s in sockets
            ):
                return True
        return False

    def _why_exited(self) -> str:
        """The line of this start's log that says why Appium exited (its error), else
        the last lines."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for mark in ("Original error:", "EADDRINUSE", "Error:", "Could not"):
            hit = next((line for line in lines if mark in line), None)
            if hit is not None:
                # "... Could not configure Appium server. ... Original error: listen ..."
                return hit.split("Original error:", 1)[-1].strip()
        return " | ".join(lines[-3:]) or "(no log)"

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server (SIGTERM to its process group, then SIGKILL); never raises."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)  # our own child's group: appium and its drivers
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
        logger.warning("appium %s did not stop", process.pid)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
