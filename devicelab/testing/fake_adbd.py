"""A fake Android device that speaks the real adb transport protocol over TCP.

The real adb server connects to it as to a phone in wireless-debugging mode (``adb
connect 127.0.0.1:PORT``), so adb, adbutils and devicelab run end to end without one:

    with FakeAdbd() as fake:
        subprocess.run(["adb", "-P", str(server_port), "connect", fake.serial])
        fake.on("pm path", lambda cmd: ShellResult("package:/data/app/base.apk\\n"))
        ...                                   # adbutils against the adb server
        assert fake.settings["global"]["http_proxy"] == "127.0.0.1:8080"

Lifecycle: ``start()`` listens on 127.0.0.1 (a free port unless given) in a background
thread and returns self; ``stop()`` drops every connection and joins the thread. Each
connection begins with the server's CNXN, answered with ours at once (no AUTH; with
``authorized=False`` it is answered with AUTH and no key is ever accepted, so the server
lists the device as unauthorized, as a phone whose prompt nobody answered). Each OPEN
names a service; the fake answers OKAY, its output as WRTEs (waiting for the server's
OKAY after each, as adbd does), then CLSE. An unknown service is refused with CLSE.

Services: ``shell:`` and ``exec:`` (raw output, stderr merged as on a pty), ``shell,v2``
(shell protocol v2: stdout, stderr and exit-code packets) and ``reverse:`` (forward,
killforward, killforward-all, list-forward). The reverse table is only kept, never
listened on: the device side of ``tcp:8080`` would be this machine's 8080, which the
host side (the proxy) already holds. ``sync:`` is not served.

Shell commands: registered handlers first (``on``), then ``getprop``, ``settings
get|put|delete``, ``dumpsys battery``, ``dumpsys meminfo <package>``, ``echo``, ``true``
and ``false``; anything else exits 127 with "not found" on stderr. A command line may
chain commands with ``;`` and use ``$?`` (adbutils' shell2 appends ``; echo X4EXIT:$?``).
The dumpsys texts are modelled on a Pixel 6 on Android 13 (the App Summary of Android
11+, with TOTAL PSS, TOTAL RSS and TOTAL SWAP PSS).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shlex
from collections.abc import Callable, Mapping
from typing import NamedTuple

from devicelab.testing import adb_wire as wire
from devicelab.testing.background import BackgroundServer

__all__ = ["BATTERY", "MEMINFO", "FakeAdbd", "ShellHandler", "ShellResult"]

logger = logging.getLogger("devicelab.testing.fake_adbd")


class ShellResult(NamedTuple):
    """What a shell command printed and its exit code."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


ShellHandler = Callable[[str], ShellResult | str]

BATTERY = """\
Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 3713000
  status: 2
  health: 2
  present: true
  level: 85
  scale: 100
  voltage: 4213
  temperature: 291
  technology: Li-ion
"""

MEMINFO = """\
Applications Memory Usage (in Kilobytes):
Uptime: 5523112 Realtime: 5523112

** MEMINFO in pid {pid} [{package}] **
                   Pss  Private  Private  SwapPss      Rss     Heap     Heap     Heap
                 Total    Dirty    Clean    Dirty    Total     Size    Alloc     Free
                ------   ------   ------   ------   ------   ------   ------   ------
  Native Heap    23150    23060        0      412    25364    35520    27145     4123
  Dalvik Heap     9850     9764        0      128    14620    16384     8192     8192
 Dalvik Other     3120     2932        0       10     4820
        Stack     1480     1480        0        8     1492
     .so mmap    10230      536     6872       96    48316
    .apk mmap     6031      180     3476        0    24140
    .art mmap     8311     7844      212       68    19656
    GL mtrack     8640     8640        0        0     8640
      Unknown     1205     1180        0       24     1720
        TOTAL    80929    55640    16116      746   200948    51904    35337    12315

 App Summary
                       Pss(KB)                        Rss(KB)
                        ------                         ------
           Java Heap:    17820                          34276
         Native Heap:    23060                          25364
                Code:    15992                         114468
               Stack:     1480                           1492
            Graphics:     8640                           8640
       Private Other:     4764
              System:     9173
             Unknown:                                    16708

           TOTAL PSS:    80929            TOTAL RSS:   200948       TOTAL SWAP PSS:      746

 Objects
               Views:      112         ViewRootImpl:        1
         AppContexts:        6           Activities:        1
"""

_PROPS = {
    "ro.product.name": "oriole",
    "ro.product.model": "Pixel 6",
    "ro.product.device": "oriole",
    "ro.product.manufacturer": "Google",
    "ro.build.version.release": "13",
    "ro.build.version.sdk": "33",
    "ro.serialno": "1A2B3C4D5E6F",
}
# Only what the fake serves: a server that saw more (stat_v2, abb...) would use it.
_FEATURES = ("shell_v2", "cmd")


def _split_commands(line: str) -> list[str]:
    """``a; b`` → ``["a", "b"]``, leaving ``;`` inside quotes alone."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    for char in line:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ";":
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


class FakeAdbd(BackgroundServer):
    """A fake device's adbd on 127.0.0.1 (see the module docstring for its lifecycle).

    Observable state: ``props`` (getprop), ``settings`` (namespace → key → value),
    ``reverses`` (device side → host side, e.g. ``{"tcp:8080": "tcp:8080"}``),
    ``packages`` (running apps that ``dumpsys meminfo`` knows) and ``services`` (every
    service string opened, oldest first).
    """

    NAME = "fake-adbd"

    def __init__(
        self, props: Mapping[str, str] | None = None, port: int = 0, *, authorized: bool = True
    ) -> None:
        self.props: dict[str, str] = {**_PROPS, **(props or {})}
        self.authorized = authorized  # False: answers CNXN with AUTH and never lets in
        self.settings: dict[str, dict[str, str]] = {"global": {}, "secure": {}, "system": {}}
        self.reverses: dict[str, str] = {}
        self.packages: set[str] = {"com.example.app"}
        self.services: list[str] = []
        self.port = port
        self._handlers: dict[str, ShellHandler] = {}
        super().__init__()
        self._connections: set[wire.DeviceConnection] = set()
        self._numbers = itertools.count(1)

    @property
    def serial(self) -> str:
        """The serial the adb server gives this device once connected: ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def banner(self) -> bytes:
        """The payload of our CNXN: system type, product properties and features."""
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        props = "".join(f"{key}={self.props.get(key, '')};" for key in keys)
        return f"device::{props}features={','.join(_FEATURES)}".encode()

    def on(self, prefix: str, handler: ShellHandler) -> None:
        """Answer shell commands starting with ``prefix`` with ``handler(command)``.

        The handler returns a ShellResult or a str (stdout, exit code 0); the longest
        matching prefix wins, and handlers win over the built-in commands.
        """
        self._handlers[prefix] = handler

    # --- lifecycle (BackgroundServer) ------------------------------------------------
    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = f"host-{next(self._numbers)}"  # what adbd calls a TCP peer
        connection = wire.DeviceConnection(
            reader, writer, self.banner, self.answer, transport, self.authorized
        )
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)

    def _open_writers(self) -> list[asyncio.StreamWriter]:
        return [connection.writer for connection in self._connections]

    # --- services -----------------------------------------------------------------------
    def answer(self, service: str, transport: str = "host-1") -> bytes | None:
        """The bytes adbd writes back for ``service``, or None when it refuses it."""
        self.services.append(service)
        name, _, arg = service.partition(":")
        if name in ("shell", "exec"):
            result = self.run(arg)
            return (result.stdout + result.stderr).encode()
        if name.startswith("shell,") and "v2" in name.split(","):
            result = self.run(arg)
            out = b""
            if result.stdout:
                out += wire.shell_packet(wire.SHELL_STDOUT, result.stdout.encode())
            if result.stderr:
                out += wire.shell_packet(wire.SHELL_STDERR, result.stderr.encode())
            return out + wire.shell_packet(wire.SHELL_EXIT, bytes([result.exit_code & 0xFF]))
        if name == "reverse":
            return self._reverse(arg, transport)
        return None

    def _reverse(self, request: str, transport: str) -> bytes:
        # adbd's handle_forward_request: one OKAY (the server adds the connect OKAY).
        if request == "list-forward":
            lines = "".join(f"{transport} {r} {h}\n" for r, h in self.reverses.items())
            return wire.protocol_string(lines)
        if request == "killforward-all":
            self.reverses.clear()
            return b"OKAY"
        if request.startswith("killforward:"):
            remote = request.removeprefix("killforward:")
            if self.reverses.pop(remote, None) is None:
                return wire.fail(f"listener '{remote}' not found")
            return b"OKAY"
        if request.startswith("forward:"):
            spec = request.removeprefix("forward:")
            norebind = spec.startswith("norebind:")
            remote, sep, local = spec.removeprefix("norebind:").partition(";")
            if not sep or not remote or not local:
                return wire.fail(f"bad forward: {spec}")
            if norebind and remote in self.reverses:
                return wire.fail("cannot rebind existing socket")
            self.reverses[remote] = local
            return b"OKAY"
        return wire.fail(f"unknown reverse request: {request}")

    def run(self, line: str) -> ShellResult:
        """Run a shell command line (``;``-chained); returns the joined output, last code."""
        stdout, stderr, code = "", "", 0
        for command in _split_commands(line):
            result = self._run_one(command.replace("$?", str(code)))
            stdout, stderr, code = stdout + result.stdout, stderr + result.stderr, result.exit_code
        return ShellResult(stdout, stderr, code)

    def _run_one(self, command: str) -> ShellResult:
        for prefix in sorted(self._handlers, key=len, reverse=True):
            if command.startswith(prefix):
                result = self._handlers[prefix](command)
                return ShellResult(result) if isinstance(result, str) else result
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            return ShellResult("", f"/system/bin/sh: syntax error: {exc}\n", 1)
        match argv:
            case ["echo", *words]:
                return ShellResult(" ".join(words) + "\n")
            case ["true"]:
                return ShellResult()
            case ["false"]:
                return ShellResult(exit_code=1)
            case ["getprop"]:
                return ShellResult("".join(f"[{k}]: [{v}]\n" for k, v in self.props.items()))
            case ["getprop", key]:
                return ShellResult(self.props.get(key, "") + "\n")
            case ["settings", verb, namespace, *rest] if namespace in self.settings:
                return self._settings(verb, self.settings[namespace], rest)
            case ["dumpsys", "battery"]:
                return ShellResult(BATTERY)
            case ["dumpsys", "meminfo", package]:
                if package not in self.packages:
                    return ShellResult(f"No process found for: {package}\n")
                pid = 10000 + sorted(self.packages).index(package)
                return ShellResult(MEMINFO.format(pid=pid, package=package))
        name = argv[0] if argv else command
        return ShellResult("", f"/system/bin/sh: {name}: not found\n", 127)

    @staticmethod
    def _settings(verb: str, table: dict[str, str], rest: list[str]) -> ShellResult:
        match verb, rest:
            case "get", [key]:
                return ShellResult(table.get(key, "null") + "\n")
            case "put", [key, value, *_]:
                table[key] = value
                return ShellResult()
            case "delete", [key]:
                return ShellResult(f"Deleted {int(table.pop(key, None) is not None)} rows\n")
        return ShellResult("", "Invalid arguments to settings\n", 255)
