"""The DVT instruments server of a fake iPhone: DTX with the deviceinfo and sysmontap
channels, enough for pymobiledevice3's ``DvtProvider``, ``DeviceInfo`` and ``Sysmontap``.

devicelab.testing.fake_lockdownd starts one :class:`InstrumentsServer` per connection to
the port its ``StartService`` handed out for the instruments service (TLS first, or a
TLS handshake then plaintext on iOS < 14, as phones do); :meth:`InstrumentsServer.serve`
then speaks DTX (devicelab.testing.dtx_wire) until the client goes.

What it serves, as a phone's DTServiceHub does:

- channel 0: the capability handshake (``_notifyOfPublishedCapabilities:`` sent as the
  connection opens, the client's recorded in ``client_capabilities``),
  ``_requestChannelWithCode:identifier:`` for :data:`DEVICEINFO` and :data:`SYSMONTAP`
  (another identifier gets an NSError), ``_channelCanceled:``;
- deviceinfo: ``hardwareInformation`` (an iPhone 11's: 6 cores), ``sysmonProcessAttributes``,
  ``sysmonSystemAttributes``, ``runningProcesses``, ``isRunningPid:``, ``execnameForPid:``;
  another selector gets the NSError of an object that does not respond to it;
- sysmontap: ``setConfig:`` (``ur``, the push period in ms, and the ``procAttrs`` and
  ``sysAttrs`` to report, in that order), ``start``: at once a first sample (a snapshot,
  ``Type`` 7, whose ``cpuUsage`` is None as no interval has passed yet; pymobiledevice3
  reads it as an ack and drops it), then every ``ur`` ms an archived array of a system
  row (``Type`` 41: ``System``, ``SystemCPUUsage``, ``CPUCount``, ``EnabledCPUs``...) and a
  process row (``Type`` 5: ``Processes`` = {pid: [values in procAttrs order]}); ``stop``
  ends the pushes, as closing the channel or the connection does. A ``silent`` phone
  sends the system rows only, as sysmontap does while XCUITest runs.

The process table is the phone's (``processes``, called once per sample, the first
included): dicts of sysmontap attributes; an attribute a dict lacks is filled in with a
plausible number, or None where a phone reports none.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from devicelab.testing import dtx_wire as wire
from devicelab.testing.dtx_wire import DtxMessage, MessageType, NSError

__all__ = [
    "APP_PID",
    "DEVICEINFO",
    "IPHONE_11_HARDWARE",
    "IPHONE_PROCESSES",
    "SYSMONTAP",
    "SYSMON_PROCESS_ATTRIBUTES",
    "SYSMON_SYSTEM_ATTRIBUTES",
    "InstrumentsServer",
    "iphone_processes",
]

logger = logging.getLogger("devicelab.testing.fake_dtx")

DEVICEINFO = "com.apple.instruments.server.services.deviceinfo"
SYSMONTAP = "com.apple.instruments.server.services.sysmontap"
#: The pid of our app ("App") in :data:`IPHONE_PROCESSES`.
APP_PID = 812
#: What an iPhone 11 (A13: 2 performance and 4 efficiency cores) answers hardwareInformation.
IPHONE_11_HARDWARE: dict[str, Any] = {
    "numberOfPhysicalCpus": 6,
    "numberOfCpus": 6,
    "speedOfCpus": 0,
    "hwCPUtype": 16777228,  # CPU_TYPE_ARM64
    "hwCPUsubtype": 2,  # CPU_SUBTYPE_ARM64E
    "hwCPU64BitCapable": 1,
}
SYSMON_PROCESS_ATTRIBUTES = [
    "memVirtualSize", "cpuUsage", "procStatus", "appSleep", "uid", "vmPageIns", "memRShrd",
    "ctxSwitch", "memCompressed", "intWakeups", "cpuTotalSystem", "responsiblePID",
    "physFootprint", "cpuTotalUser", "sysCallsUnix", "memResidentSize", "sysCallsMach",
    "memPurgeable", "diskBytesRead", "machPortCount", "__suddenTerm", "__arch", "memRPrvt",
    "msgSent", "ppid", "threadCount", "memAnon", "diskBytesWritten", "pgid", "faults",
    "msgRecv", "__restricted", "pid", "__sandbox", "name", "powerScore", "startAbsTime",
]  # fmt: skip
SYSMON_SYSTEM_ATTRIBUTES = [
    "diskWriteOps", "diskBytesRead", "diskBytesWritten", "threadCount",
    "vmCompressorPageCount", "vmExtPageCount", "vmFreeCount", "vmIntPageCount",
    "vmPurgeableCount", "netPacketsIn", "vmWireCount", "netBytesIn", "netPacketsOut",
    "diskReadOps", "vmUsedCount", "__vmSwapUsage", "netBytesOut", "physMemSize",
]  # fmt: skip
_MB = 1_000_000
_BUNDLES = "/private/var/containers/Bundle/Application"
_WEBCONTENT = (
    "/System/Library/Frameworks/WebKit.framework/XPCServices/"
    "com.apple.WebKit.WebContent.xpc/com.apple.WebKit.WebContent"
)
#: A running iPhone as sysmontap reports it: daemons, Safari with a web content process,
#: and our app ("App", :data:`APP_PID`) with the WebContent process it is responsible for.
IPHONE_PROCESSES: list[dict[str, Any]] = [
    {"pid": 0, "name": "kernel_task", "ppid": 0, "uid": 0, "cpuUsage": 1.9,
     "physFootprint": 0, "memResidentSize": 1_210_000_000, "threadCount": 268,
     "realAppName": "kernel_task"},
    {"pid": 1, "name": "launchd", "ppid": 0, "uid": 0, "cpuUsage": 0.1,
     "physFootprint": 9_600_000, "memResidentSize": 7_400_000, "threadCount": 3,
     "realAppName": "/sbin/launchd"},
    {"pid": 66, "name": "backboardd", "uid": 501, "cpuUsage": 2.4,
     "physFootprint": 22_300_000, "memResidentSize": 31_800_000, "threadCount": 19},
    {"pid": 73, "name": "SpringBoard", "uid": 501, "cpuUsage": 1.2,
     "physFootprint": 96_400_000, "memResidentSize": 118_200_000, "threadCount": 41,
     "isApplication": True, "realAppName": "/System/Library/CoreServices/SpringBoard.app"},
    {"pid": 640, "name": "MobileSafari", "uid": 501, "cpuUsage": 0.0,
     "physFootprint": 48_100_000, "memResidentSize": 71_000_000, "threadCount": 17,
     "isApplication": True, "realAppName": "/Applications/MobileSafari.app/MobileSafari"},
    {"pid": 652, "name": "com.apple.WebKit.WebContent", "responsiblePID": 640,
     "uid": 501, "cpuUsage": 0.3, "physFootprint": 61_700_000,
     "memResidentSize": 83_500_000, "threadCount": 12, "realAppName": _WEBCONTENT},
    {"pid": APP_PID, "name": "App", "uid": 501, "cpuUsage": 23.5,
     "physFootprint": 142_000_000, "memResidentSize": 171_300_000, "threadCount": 28,
     "isApplication": True,
     "realAppName": f"{_BUNDLES}/5F0A9C1E-2B7D-4E36-9A41-0C8E7D6B5A34/App.app/App"},
    {"pid": 829, "name": "com.apple.WebKit.WebContent", "responsiblePID": APP_PID,
     "uid": 501, "cpuUsage": 31.2, "physFootprint": 187_600_000,
     "memResidentSize": 205_400_000, "threadCount": 22, "realAppName": _WEBCONTENT},
]  # fmt: skip
# Filled in for an attribute a process dict lacks (sizes in bytes, as sysmontap sends).
_FILLED: dict[str, Any] = {
    "ppid": 1, "uid": 501, "cpuUsage": 0.0, "physFootprint": 8 * _MB,
    "memResidentSize": 10 * _MB, "memVirtualSize": 420_906_795_008, "threadCount": 4,
    "procStatus": 2, "appSleep": 0, "__arch": 12, "__suddenTerm": 0, "__restricted": 1,
    "__sandbox": 1, "powerScore": 0.0, "cpuTotalUser": 1_200_000, "cpuTotalSystem": 600_000,
    "memCompressed": 0, "memPurgeable": 0, "memAnon": 6 * _MB, "memRPrvt": None,
    "memRShrd": None, "vmPageIns": 120, "ctxSwitch": 5_300, "intWakeups": 410, "faults": 9_800,
    "msgSent": 2_100, "msgRecv": 1_900, "sysCallsUnix": 14_000, "sysCallsMach": 11_000,
    "machPortCount": 120, "diskBytesRead": 2_400_000, "diskBytesWritten": 310_000,
}  # fmt: skip
_SYSTEM: dict[str, int] = {
    "diskWriteOps": 183_211, "diskBytesRead": 6_103_212_032, "diskBytesWritten": 2_881_007_616,
    "threadCount": 1_342, "vmCompressorPageCount": 21_004, "vmExtPageCount": 61_233,
    "vmFreeCount": 4_188, "vmIntPageCount": 90_155, "vmPurgeableCount": 2_310,
    "netPacketsIn": 811_204, "vmWireCount": 58_120, "netBytesIn": 903_112_448,
    "netPacketsOut": 402_877, "diskReadOps": 410_562, "vmUsedCount": 166_012,
    "__vmSwapUsage": 0, "netBytesOut": 61_884_211, "physMemSize": 3_854_565_376 // 16_384,
}  # fmt: skip


def iphone_processes() -> list[Mapping[str, Any]]:
    """A fresh copy of :data:`IPHONE_PROCESSES` (the default of ``FakeIPhone.processes``)."""
    return [dict(p) for p in IPHONE_PROCESSES]


def _mach_now() -> int:
    # mach_absolute_time of an A13: 24 MHz ticks (timebase 125/3 ns).
    return time.monotonic_ns() * 3 // 125


class InstrumentsServer:
    """One DTX connection to a phone's instruments server (see the module docstring).

    Lifecycle: made for one connection; :meth:`serve` runs until the client goes, and
    the sysmontap pushes end with it (or with ``stop``, or the channel's cancel).

    ``processes`` returns the phone's process table, ``silent`` says whether sysmontap
    keeps its process rows to itself. Observable: ``client_capabilities``, ``calls``
    ((channel identifier, selector) in the order received), ``sysmontap_config`` and
    ``pushing``.
    """

    CAPABILITIES: ClassVar[dict[str, Any]] = {
        "com.apple.private.DTXConnection": 1,
        "com.apple.private.DTXBlockCompression": 2,
        DEVICEINFO: 113,
        SYSMONTAP: 3,
        "com.apple.instruments.server.services.processcontrol": 107,
        "com.apple.instruments.server.services.graphics.opengl": 1,
        "com.apple.instruments.server.services.networking": 2,
    }

    def __init__(
        self,
        processes: Callable[[], Sequence[Mapping[str, Any]]] = iphone_processes,
        *,
        silent: Callable[[], bool] = lambda: False,
        hardware: Mapping[str, Any] = IPHONE_11_HARDWARE,
    ) -> None:
        self.processes = processes
        self.silent = silent
        self.hardware = dict(hardware)
        self.client_capabilities: dict[str, Any] | None = None
        self.calls: list[tuple[str, str]] = []
        self.sysmontap_config: dict[str, Any] | None = None
        self._channels: dict[int, str] = {}  # the client's code -> identifier
        self._pushes: dict[int, asyncio.Task[None]] = {}
        self._ids = itertools.count(1)
        self._writer: asyncio.StreamWriter | None = None

    @property
    def pushing(self) -> bool:
        """Whether a sysmontap channel is pushing samples now."""
        return any(not task.done() for task in self._pushes.values())

    # --- the connection -----------------------------------------------------------------
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve DTX on a connection until the client goes or sends what is not DTX;
        never raises for either."""
        self._writer = writer
        try:
            capabilities = wire.build_aux([self.CAPABILITIES])
            await self._send(MessageType.DISPATCH, 0, "_notifyOfPublishedCapabilities:",
                             aux=capabilities)  # fmt: skip
            while True:
                await self._handle(await wire.read_message(reader))
        except (asyncio.IncompleteReadError, OSError):
            pass  # the client went away (a TLS stream may end in an SSLError)
        except wire.DtxError as exc:
            logger.info("fake instruments server drops a client: %s", exc)
        finally:
            for code in list(self._pushes):
                self._stop_pushes(code)

    async def _send(self, kind: int, channel: int, payload: Any = None, *, aux: bytes = b"",
                    identifier: int = 0, conversation: int = 0) -> None:  # fmt: skip
        assert self._writer is not None
        message = DtxMessage(
            type=kind,
            identifier=identifier or next(self._ids),
            conversation=conversation,
            channel=channel,
            aux=aux,
            payload=b"" if payload is None else wire.archive(payload),
        )
        self._writer.write(message.pack())  # one write: pushes never interleave a reply
        await self._writer.drain()

    async def _handle(self, message: DtxMessage) -> None:
        if message.conversation != 0:
            return  # a reply to us; we ask nothing that wants one
        result: Any = None
        if message.type == MessageType.DISPATCH:
            selector = wire.unarchive(message.payload)
            args = wire.parse_aux(message.aux)
            identifier = "control" if message.channel == 0 else self._channels.get(message.channel)
            self.calls.append((identifier or "?", str(selector)))
            if message.channel == 0:
                result = self._control(str(selector), args)
            elif identifier == DEVICEINFO:
                result = self._deviceinfo(str(selector), args)
            elif identifier == SYSMONTAP:
                result = self._sysmontap(message.channel, str(selector), args)
            else:
                result = _error(f"No channel registered for code {message.channel}")
        if message.expects_reply:
            kind = MessageType.OK
            if isinstance(result, NSError):
                kind = MessageType.ERROR
            elif result is not None:
                kind = MessageType.OBJECT
            # The reply names the channel as the request did (the client's own code).
            await self._send(kind, message.channel, result, identifier=message.identifier,
                             conversation=message.conversation + 1)  # fmt: skip

    # --- channel 0 ----------------------------------------------------------------------
    def _control(self, selector: str, args: list[Any]) -> Any:
        if selector == "_notifyOfPublishedCapabilities:" and args:
            self.client_capabilities = dict(args[0] or {})
            return None
        if selector == "_requestChannelWithCode:identifier:" and len(args) == 2:
            code, identifier = int(args[0]), str(args[1])
            if identifier not in (DEVICEINFO, SYSMONTAP):
                return _error(f"Unable to find a service for identifier {identifier!r}")
            self._channels[code] = identifier
            return None
        if selector == "_channelCanceled:" and args:
            self._stop_pushes(int(args[0]))
            self._channels.pop(int(args[0]), None)
            return None
        return _unrecognized("DTXConnection", selector)

    # --- deviceinfo ---------------------------------------------------------------------
    def _deviceinfo(self, selector: str, args: list[Any]) -> Any:
        if selector == "hardwareInformation":
            return dict(self.hardware)
        if selector == "sysmonProcessAttributes":
            return list(SYSMON_PROCESS_ATTRIBUTES)
        if selector == "sysmonSystemAttributes":
            return list(SYSMON_SYSTEM_ATTRIBUTES)
        if selector == "runningProcesses":
            return [_running(p) for p in self.processes()]
        if selector in ("isRunningPid:", "execnameForPid:") and args:
            found = [p for p in self.processes() if p.get("pid") == args[0]]
            if selector == "isRunningPid:":
                return bool(found)
            return _running(found[0])["realAppName"] if found else None
        return _unrecognized("DTDeviceInfoService", selector)

    # --- sysmontap ----------------------------------------------------------------------
    def _sysmontap(self, code: int, selector: str, args: list[Any]) -> Any:
        if selector == "setConfig:" and args and isinstance(args[0], dict):
            self.sysmontap_config = dict(args[0])
            return None
        if selector == "start":
            self._stop_pushes(code)
            config = self.sysmontap_config or {}
            self._pushes[code] = asyncio.create_task(self._push(code, config))
            return None
        if selector == "stop":
            self._stop_pushes(code)
            return None
        return _unrecognized("DTSysmonTapService", selector)

    def _stop_pushes(self, code: int) -> None:
        task = self._pushes.pop(code, None)
        if task is not None:
            task.cancel()

    async def _push(self, code: int, config: Mapping[str, Any]) -> None:
        """Push samples on the client's channel ``code`` until cancelled or the client goes."""
        period = max(int(config.get("ur", 500) or 500), 1) / 1000
        proc_attrs = [str(a) for a in config.get("procAttrs") or SYSMON_PROCESS_ATTRIBUTES]
        sys_attrs = [str(a) for a in config.get("sysAttrs") or SYSMON_SYSTEM_ATTRIBUTES]
        start = _mach_now()
        try:
            first = True
            while True:
                end = _mach_now()
                silent = self.silent()
                table = [] if silent else list(self.processes())  # once per sample
                rows = [self._system_row(sys_attrs, table, start, end, first)]
                if not silent:
                    rows.append(self._process_row(proc_attrs, table, start, end, first))
                # Pushed on the channel the client opened: its code, negated.
                await self._send(MessageType.OBJECT, -code, rows)
                first, start = False, end + 1
                await asyncio.sleep(period)
        except (ConnectionError, OSError):
            pass  # the client went away between two samples

    @staticmethod
    def _process_row(attrs: list[str], processes: Sequence[Mapping[str, Any]], start: int,
                     end: int, first: bool) -> dict[str, Any]:  # fmt: skip
        # Rates need two samples: the first has none, as on a phone.
        rates = ("cpuUsage", "powerScore")
        table = {
            int(p["pid"]): [None if first and a in rates else _value(p, a) for a in attrs]
            for p in processes
        }
        row: dict[str, Any] = {"Processes": table, "Type": 7 if first else 5,
                               "StartMachAbsTime": start, "EndMachAbsTime": end}  # fmt: skip
        if first:
            row["ProcessesAttributes"] = list(attrs)
        return row

    def _system_row(self, attrs: list[str], processes: Sequence[Mapping[str, Any]], start: int,
                    end: int, first: bool) -> dict[str, Any]:  # fmt: skip
        cores = int(self.hardware.get("numberOfCpus", 1))
        busy = 0.0 if first else sum(_cpu(p) for p in processes)
        total = min(busy, 100.0 * cores)
        # What a phone reports per core: the load spread, user and system loads unknown (-1).
        load = [{"CPU_TotalLoad": total / cores, "CPU_UserLoad": -1.0,
                 "CPU_NiceLoad": 0.0, "CPU_SystemLoad": -1.0} for _ in range(cores)]  # fmt: skip
        row: dict[str, Any] = {
            "Type": 41,
            "CPUCount": cores,
            "EnabledCPUs": cores,
            "PerCPUUsage": load,
            "SystemCPUUsage": {**load[0], "CPU_TotalLoad": total},
            "System": [_SYSTEM.get(a) for a in attrs],
            "StartMachAbsTime": start,
            "EndMachAbsTime": end,
        }
        if first:
            row["SystemAttributes"] = list(attrs)
        return row


def _value(process: Mapping[str, Any], attribute: str) -> Any:
    """``process``'s value of a sysmontap attribute, filled in when the dict lacks it."""
    if attribute in process:
        return process[attribute]
    pid = int(process.get("pid", 0))
    if attribute in ("responsiblePID", "pgid"):
        return pid  # a process is its own responsible process unless told otherwise
    if attribute == "startAbsTime":
        return 1_000_000 + pid * 2_400
    return _FILLED.get(attribute)


def _cpu(process: Mapping[str, Any]) -> float:
    value = process.get("cpuUsage")
    return float(value) if isinstance(value, int | float) else 0.0


def _running(process: Mapping[str, Any]) -> dict[str, Any]:
    """A runningProcesses entry (startDate an NSDate, as the phone sends it)."""
    name = str(process.get("name", ""))
    started = time.time() - 3_600 - int(process.get("pid", 0))
    return {
        "pid": int(process.get("pid", 0)),
        "name": name,
        "realAppName": str(process.get("realAppName", f"/usr/libexec/{name}")),
        "isApplication": bool(process.get("isApplication", False)),
        "startDate": datetime.datetime.fromtimestamp(started, datetime.UTC),
    }


def _error(description: str) -> NSError:
    return NSError("DTXMessage", 1, {"NSLocalizedDescription": description})


def _unrecognized(receiver: str, selector: str) -> NSError:
    # The wording of the error a phone returns for a selector its service lacks.
    return _error(f"Unable to invoke -[{receiver} {selector}] - it does not respond to the "
                  "selector")  # fmt: skip
