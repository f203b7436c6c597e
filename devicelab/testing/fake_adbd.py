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

For the samplers (devicelab.samplers.android) it also serves ``dumpsys battery unplug``
and ``reset`` (the "(UPDATES STOPPED ...)" marker, chargers reported off), ``pidof
<package>`` and ``cat`` of /proc/stat, /proc/<pid>/stat and ``current_now``, with CPU
counters that advance on every read (the app 10 %, the device 30 % busy). The variants
``MEMINFO_ANDROID10`` (App Summary "TOTAL:", no RSS) and ``BATTERY_SAMSUNG`` (vendor
lines, a second lower-case charge counter, log text after the block) are set through
``meminfo_text`` and ``battery_text``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shlex
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from devicelab.testing import adb_wire as wire
from devicelab.testing.background import BackgroundServer

__all__ = [
    "BATTERY",
    "BATTERY_SAMSUNG",
    "MEMINFO",
    "MEMINFO_ANDROID10",
    "UPDATES_STOPPED",
    "DrainingBattery",
    "FakeAdbd",
    "ShellHandler",
    "ShellResult",
]

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

MEMINFO_ANDROID10 = """\
Applications Memory Usage (in Kilobytes):
Uptime: 90817233 Realtime: 90817233

** MEMINFO in pid {pid} [{package}] **
                   Pss  Private  Private  SwapPss     Heap     Heap     Heap
                 Total    Dirty    Clean    Dirty     Size    Alloc     Free
                ------   ------   ------   ------   ------   ------   ------
  Native Heap    14822    14756        0      310    24576    17103     7472
  Dalvik Heap     4412     4336        0       98     6790     3395     3395
 Dalvik Other     1804     1756        0        2
        Stack     1092     1092        0        4
       Ashmem        2        0        0        0
    Other dev       16        0       16        0
     .so mmap     5203      268     2444       66
    .apk mmap     2250        0     1180        0
    .ttf mmap       38        0        0        0
    .dex mmap     4210       12     3176        0
    .oat mmap      153        0        0        0
    .art mmap     5868     5476       44       42
   Other mmap       75        4        4        0
    GL mtrack     5652     5652        0        0
      Unknown      541      532        0       14
        TOTAL    46672    33844     6864      536    31366    20498    10867

 App Summary
                       Pss(KB)
                        ------
           Java Heap:     9856
         Native Heap:    14756
                Code:     7080
               Stack:     1092
            Graphics:     5652
       Private Other:     2272
              System:     5964

               TOTAL:    46672       TOTAL SWAP PSS:      536

 Objects
               Views:       41         ViewRootImpl:        1
         AppContexts:        4           Activities:        1
"""

BATTERY_SAMSUNG = """\
Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Max charging current: 475000
  Max charging voltage: 5000000
  Charge counter: 2907000
  status: 2
  health: 2
  present: true
  level: 71
  scale: 100
  voltage: 4071
  temperature: 312
  technology: Li-ion
  mSecPlugTypeSummary: 2
  LED Charging: true
  LED Low Battery: true
  current now: 389
  charge counter: 2907000
  Adaptive Fast Charging Settings: true
  Super Fast Charging Settings: false
FEATURE_WIRELESS_FASTCHARGER_CONTROL: true
  mWasUsedWirelessFastChargerPreviously: false
  mWirelessFastChargingSettingsEnable: true
  LLB CAL: 20190712
  LLB MAN: 20190614
  LLB CURRENT: YEAR2024M2D14
  SEC_BAT battery log: level 71 -> 71, onlines 2
"""


class DrainingBattery:
    """A ``dumpsys battery`` handler for ``FakeAdbd.on("dumpsys battery", ...)``: the phone
    on battery (no charger, ``status: 3`` discharging) whose level falls by
    ``pct_per_hour`` from ``start_pct``, with time since the handler was made. The level is
    reported on a scale of 10000 so that a run of seconds still sees it fall; ``dumpsys
    battery unplug`` and ``reset`` are accepted and change nothing."""

    SCALE = 10000

    def __init__(self, pct_per_hour: float, start_pct: float = 85.0) -> None:
        self.pct_per_hour = pct_per_hour
        self.start_pct = start_pct
        self.started = time.monotonic()

    def level_pct(self) -> float:
        """The level now, in percent."""
        hours = (time.monotonic() - self.started) / 3600
        return max(0.0, self.start_pct - self.pct_per_hour * hours)

    def __call__(self, command: str) -> str:
        if command.split() != ["dumpsys", "battery"]:
            return ""
        level = round(self.level_pct() * self.SCALE / 100)
        text = BATTERY.replace("USB powered: true", "USB powered: false")
        text = text.replace("status: 2", "status: 3").replace("level: 85", f"level: {level}")
        return text.replace("scale: 100", f"scale: {self.SCALE}")


#: The line ``dumpsys battery`` prints after its header once ``dumpsys battery unplug`` ran.
UPDATES_STOPPED = "  (UPDATES STOPPED -- use 'reset' to restart)\n"

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
        self.meminfo_text = MEMINFO  # or MEMINFO_ANDROID10 (formatted with pid, package)
        self.battery_text = BATTERY  # or BATTERY_SAMSUNG
        self.battery_unplugged = False  # `dumpsys battery unplug` ran, no `reset` yet
        self.current_now: str | None = "-512000\n"  # µA; None: Permission denied
        self._jiffies = 0  # advances on every read of /proc/stat
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

    def off(self, prefix: str) -> None:
        """Stop answering ``prefix`` with a handler (the built-in command answers again)."""
        self._handlers.pop(prefix, None)

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
                return ShellResult(self._battery())
            case ["dumpsys", "battery", "unplug" | "reset" as verb]:
                self.battery_unplugged = verb == "unplug"
                return ShellResult()
            case ["dumpsys", "meminfo", package]:
                if package not in self.packages:
                    return ShellResult(f"No process found for: {package}\n")
                pid = 10000 + sorted(self.packages).index(package)
                return ShellResult(self.meminfo_text.format(pid=pid, package=package))
            case ["pidof", package]:
                if package not in self.packages:
                    return ShellResult(exit_code=1)
                return ShellResult(f"{10000 + sorted(self.packages).index(package)}\n")
            case ["cat", *paths]:
                return self._cat([p for p in paths if not p.startswith("2>")])
        name = argv[0] if argv else command
        return ShellResult("", f"/system/bin/sh: {name}: not found\n", 127)

    def _battery(self) -> str:
        if not self.battery_unplugged:
            return self.battery_text
        header, _, rest = self.battery_text.partition("\n")
        for charger in ("AC", "USB", "Wireless"):
            rest = rest.replace(f"{charger} powered: true", f"{charger} powered: false")
        return f"{header}\n{UPDATES_STOPPED}{rest}"

    def _cat(self, paths: list[str]) -> ShellResult:
        out, err = "", ""
        for path in paths:
            text = self._file(path)
            if text is None:
                err += f"cat: {path}: No such file or directory\n"
            elif text == "":
                err += f"cat: {path}: Permission denied\n"
            else:
                out += text
        return ShellResult(out, err, 1 if err else 0)

    def _file(self, path: str) -> str | None:
        pids = {str(10000 + i): p for i, p in enumerate(sorted(self.packages))}
        if path == "/proc/stat":
            self._jiffies += 1
            n = self._jiffies
            # user nice system idle iowait irq softirq steal guest guest_nice: 400 per read,
            # 120 of them busy (30 %)
            return (f"cpu  {80 * n} {4 * n} {32 * n} {272 * n} {8 * n} {2 * n} {2 * n} 0 0 0\n"
                    "cpu0 1 0 1 1 0 0 0 0 0 0\nctxt 9165\nbtime 1732850000\n")  # fmt: skip
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "proc" and parts[3] == "stat" and parts[2] in pids:
            n = self._jiffies  # 40 ticks per read of /proc/stat: 10 % of the device
            head = f"{parts[2]} ({pids[parts[2]][-15:]}) S 612 612 0 0 -1 1077936448 52345 0"
            return f"{head} 1234 0 {30 * n} {10 * n} 0 0 10 -10 45 0 123456 15987654656 45000\n"
        if path == "/sys/class/power_supply/battery/current_now":
            return "" if self.current_now is None else self.current_now
        return None

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
