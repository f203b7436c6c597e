"""A real adb server on a private port, for tests that put a fake phone behind it.

adb and adbutils find their server through ``ANDROID_ADB_SERVER_PORT`` and keep their key
in ``$HOME/.android``; left alone they start a server on 5037 and write to the user's
home. ``PrivateAdbServer`` runs one on a free port with a home of its own, and ``env``
holds what a process (adb, adbutils, devicelab) needs to talk to it:

    with PrivateAdbServer(tmp_path) as adb, adb.environ(), adb.phone() as phone:
        ...                                   # adbutils / devicelab in this process
        subprocess.run([...], env=adb.env)    # or another process

Lifecycle: ``start()`` runs ``adb start-server`` and returns self; ``stop()`` runs
``adb kill-server`` and never raises. Also a context manager.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from devicelab.ports import free_port
from devicelab.testing.fake_adbd import FakeAdbd

__all__ = ["PrivateAdbServer", "adb_binaries", "free_port"]


def adb_binaries() -> list[str]:
    """Debian's adb and the one in the adbutils wheel, each when present."""
    found = []
    if Path("/usr/bin/adb").exists():
        found.append("/usr/bin/adb")
    try:
        import adbutils

        bundled = Path(adbutils.__file__).parent / "binaries" / "adb"
        if bundled.exists():
            found.append(str(bundled))
    except ImportError:
        pass
    return found


class PrivateAdbServer:
    """A real adb server on a free port whose key lives in ``home`` (see the module)."""

    def __init__(self, home: Path, binary: str | None = None) -> None:
        binaries = [binary] if binary else adb_binaries()
        if not binaries:
            raise FileNotFoundError("no adb binary: apt-get install adb, or pip install adbutils")
        self.binary = binaries[0]
        self.port = free_port()
        self.env = {
            **os.environ,
            "ANDROID_ADB_SERVER_PORT": str(self.port),
            "HOME": str(home),
            "ADBUTILS_ADB_PATH": self.binary,
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``adb -P PORT args``; returns the finished process.

        Raises RuntimeError when it fails and ``check`` is set.
        """
        done = subprocess.run(
            [self.binary, "-P", str(self.port), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"adb {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done

    def connect(self, serial: str, timeout: float = 10.0) -> None:
        """``adb connect`` and wait until the device is online.

        Raises TimeoutError when the server never lists it as a device.
        """
        self.run("connect", serial)
        deadline = time.monotonic() + timeout
        listing = ""
        while time.monotonic() < deadline:
            listing = self.run("devices").stdout
            if f"{serial}\tdevice" in listing:
                return
            time.sleep(0.1)
        raise TimeoutError(f"adb never saw {serial} online: {listing!r}")

    @contextlib.contextmanager
    def environ(self) -> Iterator[None]:
        """Point this process's adb and adbutils at the server (its port, HOME and adb
        binary in ``os.environ``); the previous values come back after."""
        keys = ("ANDROID_ADB_SERVER_PORT", "HOME", "ADBUTILS_ADB_PATH")
        saved = {key: os.environ.get(key) for key in keys}
        os.environ.update({key: self.env[key] for key in keys})
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    @contextlib.contextmanager
    def phone(self, **fake: Any) -> Iterator[FakeAdbd]:
        """A FakeAdbd (``fake``: its constructor's arguments) the server is connected to;
        disconnected and stopped after. Raises TimeoutError when it never comes online."""
        with FakeAdbd(**fake) as device:
            self.connect(device.serial)
            try:
                yield device
            finally:
                self.run("disconnect", device.serial, check=False)

    def start(self) -> Self:
        """Start the server; returns self. Raises RuntimeError when adb fails."""
        self.run("start-server")
        return self

    def stop(self) -> None:
        """Kill the server; never raises."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.run("kill-server", check=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
