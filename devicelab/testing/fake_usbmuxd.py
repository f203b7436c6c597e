"""A fake usbmuxd that speaks the real usbmux protocol, with fake iPhones behind it.

pymobiledevice3 (and anything else that honours ``USBMUXD_SOCKET_ADDRESS``) talks to it
as to the daemon at /var/run/usbmuxd, so devicelab's iOS code runs end to end without
an iPhone:

    phone = FakeIPhone("00008030-001A2B3C4D5E802E")
    with FakeUsbmuxd() as mux:                      # 127.0.0.1, a free port
        mux.attach(phone)                           # paired (trusted) unless paired=False
        os.environ.update(mux.env)                  # USBMUXD_SOCKET_ADDRESS=127.0.0.1:PORT
        ...                                         # pymobiledevice3.usbmux.list_devices()
        mux.detach(phone.udid)                      # listeners get "Detached"

Lifecycle: ``start()`` listens (on 127.0.0.1, or on a unix socket ``path``) in a
background thread and returns self; ``stop()`` drops every client and joins the thread.
``attach`` and ``detach`` may be called at any time, from any thread.

What it serves, as libimobiledevice's usbmuxd does (plist protocol, version 1):
``ListDevices`` (``DeviceList`` of ``Attached`` records), ``Listen`` (a result, then an
``Attached`` for each device, then ``Attached`` / ``Detached`` as the test attaches and
detaches; the connection takes no more commands), ``ReadBUID``, ``ReadPairRecord``
(``PairRecordData`` when the host holds a record for the UDID, else result 2, ENOENT, as
usbmuxd answers), ``SavePairRecord`` and ``DeletePairRecord``, and ``Connect``: to
lockdownd (port 62078) of a phone with ``lockdown=True``, or to a port its lockdownd
handed out for a service, the result is 0 and the socket becomes a pipe to it (closed
when the phone is detached); any other port is refused with result 3 (CONNREFUSED) and
an unknown DeviceID with 2 (BADDEV). Unknown messages get result 1 (BADCOMMAND). The
binary protocol (version 0) is not served: its commands get a binary BADCOMMAND.

The phone's lockdownd is devicelab.testing.fake_lockdownd: ``QueryType``, ``GetValue``
(``values``: DeviceName, ProductType, ProductVersion, BuildVersion...), a pairing session
in TLS for a host it trusts (one attached ``paired``: its pair record has real
certificates), the diagnostics relay (``StartService``, then a ``Connect`` to the port it
gave) answering the battery entry ``battery()``, and, on iOS < 17 with
``developer_image`` mounted, the DVT instruments server (devicelab.testing.fake_dtx:
deviceinfo and sysmontap, whose process rows come from ``processes()`` unless
``sysmontap_silent``). :data:`IPHONE_11` is on iOS 17.5.1, where lockdownd refuses the
instruments services as real phones do; :data:`IPHONE_11_IOS16` serves them. On every
version it serves the notification proxy and Web Inspector
(devicelab.testing.fake_webinspector: the apps and pages of ``webviews``, their heap
snapshots), which refuses with the ``com.apple.webinspectord.disabled`` notification
unless ``web_inspector``.

USB records carry the fields usbmuxd on Linux sends (ConnectionSpeed, ConnectionType
``USB``, DeviceID, LocationID, ProductID, SerialNumber = the UDID); Network (Wi-Fi sync)
records the ones Apple's usbmuxd sends (ConnectionType ``Network``, DeviceID,
EscapedFullServiceName, InterfaceIndex, NetworkAddress as a BSD sockaddr, SerialNumber).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import plistlib
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from devicelab.testing import usbmux_wire as wire
from devicelab.testing.background import BackgroundServer
from devicelab.testing.fake_dtx import InstrumentsServer, iphone_processes
from devicelab.testing.fake_lockdownd import IPHONE_BATTERY, Lockdownd, pair_record
from devicelab.testing.fake_webinspector import FakeWebView

__all__ = [
    "IPHONE_11",
    "IPHONE_11_IOS16",
    "IPHONE_BATTERY",
    "FakeIPhone",
    "FakeUsbmuxd",
    "FakeWebView",
    "pair_record",
]

logger = logging.getLogger("devicelab.testing.fake_usbmuxd")

# What an iPhone 11 on iOS 17.5.1 gives lockdownd's GetValue without a session.
IPHONE_11: dict[str, Any] = {
    "DeviceName": "iPhone",
    "DeviceClass": "iPhone",
    "ProductName": "iPhone OS",
    "ProductType": "iPhone12,1",
    "HardwareModel": "N104AP",
    "ProductVersion": "17.5.1",
    "BuildVersion": "21F90",
    "CPUArchitecture": "arm64e",
}
#: The same iPhone 11 on iOS 16.7.8, whose lockdownd still serves the instruments server.
IPHONE_11_IOS16: dict[str, Any] = {
    **IPHONE_11,
    "ProductVersion": "16.7.8",
    "BuildVersion": "20H343",
}
_ENOENT = 2
_EINVAL = 22
_USB_HIGH_SPEED = 480_000_000  # bits/s, what usbmuxd reports for a USB 2 phone
_APPLE_IPHONE_PID = 0x12A8


@dataclass
class FakeIPhone:
    """One fake iPhone: its UDID, how it is connected and what its lockdownd says.

    ``connection`` is ``USB`` or ``Network`` (Wi-Fi sync); the same phone attached both
    ways is two FakeIPhones with the same UDID, as usbmuxd lists it twice.
    """

    NAME = "fake-usbmuxd"

    udid: str = "00008030-001A2B3C4D5E802E"
    connection: Literal["USB", "Network"] = "USB"
    lockdown: bool = True
    values: dict[str, Any] = field(default_factory=lambda: dict(IPHONE_11))
    product_id: int = _APPLE_IPHONE_PID
    location_id: int = 0x01120000
    ip: str = "192.168.50.31"
    mac: str = "a4:83:e7:12:34:56"
    #: The IOPMPowerSource entry the diagnostics relay answers (called per request).
    battery: Callable[[], Mapping[str, Any]] = field(default=lambda: IPHONE_BATTERY)
    #: Whether the developer disk image is mounted (lockdownd serves instruments only then).
    developer_image: bool = True
    #: The process table sysmontap reports (called per sample: a test can make it grow).
    processes: Callable[[], list[Mapping[str, Any]]] = field(default=iphone_processes)
    #: sysmontap sends no process rows, as while XCUITest runs.
    sysmontap_silent: bool = False
    #: The web views Web Inspector lists (one app, "App", with one page by default).
    webviews: list[FakeWebView] = field(default_factory=lambda: [FakeWebView()])
    #: Whether Web Inspector is on (Settings > Safari > Advanced); off, webinspectord refuses.
    web_inspector: bool = True

    def __post_init__(self) -> None:
        # Through lambdas: a test may set these fields after the phone is made.
        self.lockdownd = Lockdownd(
            self.udid,
            self.values,
            lambda: self.battery(),  # noqa: PLW0108
            developer_image=lambda: self.developer_image,
            instruments=lambda: InstrumentsServer(
                lambda: self.processes(),  # noqa: PLW0108
                silent=lambda: self.sysmontap_silent,
            ),
            webviews=lambda: self.webviews,
            web_inspector=lambda: self.web_inspector,
        )

    def properties(self, device_id: int) -> dict[str, Any]:
        """The ``Properties`` of this phone's ``Attached`` record."""
        if self.connection == "Network":
            return {
                "ConnectionType": "Network",
                "DeviceID": device_id,
                "EscapedFullServiceName": f"{self.mac}@fe80::a683:e7ff:fe12:3456"
                "._apple-mobdev2._tcp.local.",
                "InterfaceIndex": 4,
                "NetworkAddress": _sockaddr_in(self.ip),
                "SerialNumber": self.udid,
            }
        return {
            "ConnectionSpeed": _USB_HIGH_SPEED,
            "ConnectionType": "USB",
            "DeviceID": device_id,
            "LocationID": self.location_id,
            "ProductID": self.product_id,
            "SerialNumber": self.udid,
        }

    def lockdown_answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """lockdownd's reply to one request outside a session (see the module docstring)."""
        return self.lockdownd.answer(request, session=False)


def _sockaddr_in(ip: str) -> bytes:
    # BSD layout (length byte, family byte), as Apple's usbmuxd sends it, in 128 bytes.
    raw = bytes([16, socket.AF_INET]) + b"\x00\x00" + socket.inet_aton(ip)
    return raw.ljust(128, b"\x00")


class _Client:
    """One client connection: the protocol version it speaks and whether it listens."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.version = 0  # usbmuxd answers in binary until the client sends a plist
        self.listening = False
        self.piped_to: int | None = None  # the DeviceID once Connect made this a pipe


class FakeUsbmuxd(BackgroundServer):
    """A fake usbmuxd (see the module docstring for what it serves and its lifecycle).

    Observable state: ``devices`` (DeviceID -> FakeIPhone, as attached now),
    ``pair_records`` (UDID -> pair record: the host's store, /var/lib/lockdown on Linux)
    and ``requests`` (every MessageType received, oldest first).
    """

    def __init__(
        self,
        devices: Iterable[FakeIPhone] = (),
        *,
        path: str | Path | None = None,
        port: int = 0,
        buid: str = "7A9C3E21-5B8D-4F02-9E6A-1C3B5D7F9A2E",
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.port = port
        self.buid = buid
        self.devices: dict[int, FakeIPhone] = {}
        self.pair_records: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self._ids = itertools.count(1)
        self._clients: set[_Client] = set()
        super().__init__()
        for device in devices:
            self.attach(device)

    @property
    def address(self) -> str:
        """What ``USBMUXD_SOCKET_ADDRESS`` takes: ``127.0.0.1:PORT`` or the socket path."""
        return str(self.path) if self.path is not None else f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment that points pymobiledevice3 and libusbmuxd at this fake."""
        return {"USBMUXD_SOCKET_ADDRESS": self.address}

    # --- the phones ---------------------------------------------------------------------
    def attach(self, device: FakeIPhone, *, paired: bool = True) -> int:
        """Plug ``device`` in; returns its DeviceID. Listening clients get ``Attached``.

        ``paired`` stores a pair record for its UDID (the phone trusted this host) unless
        one is already stored; ``paired=False`` leaves the store as it is.
        """
        return self._call(lambda: self._attach(device, paired))

    def detach(self, udid: str) -> None:
        """Unplug every connection of the phone ``udid``; listeners get ``Detached``."""
        self._call(lambda: self._detach(udid))

    def _attach(self, device: FakeIPhone, paired: bool) -> int:
        device_id = next(self._ids)
        self.devices[device_id] = device
        if paired:
            record = self.pair_records.setdefault(device.udid, pair_record(device.udid, self.buid))
            device.lockdownd.trusted.add(str(record.get("HostID")))
        self._notify(_attached(device_id, device))
        return device_id

    def _detach(self, udid: str) -> None:
        for device_id, device in list(self.devices.items()):
            if device.udid == udid:
                del self.devices[device_id]
                self._notify({"MessageType": "Detached", "DeviceID": device_id})
                for client in self._clients:  # an unplugged phone's pipes break
                    if client.piped_to == device_id:
                        client.writer.close()

    def _notify(self, body: dict[str, Any]) -> None:
        for client in self._clients:
            if client.listening:
                client.writer.write(wire.pack_plist(0, body))

    def _call[T](self, action: Callable[[], T]) -> T:
        # Mutations run on the server's loop so they never race a client's request.
        loop = self._loop
        if loop is None or not loop.is_running():
            return action()

        async def run() -> T:
            return action()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=10)

    # --- lifecycle ----------------------------------------------------------------------
    async def _listen(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._server = await asyncio.start_unix_server(self._accept, str(self.path))
            return
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _open_writers(self) -> list[asyncio.StreamWriter]:
        return [client.writer for client in self._clients]

    def _stopped(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)

    # --- the protocol -------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(reader, writer)
        self._clients.add(client)
        try:
            await self._serve(client)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away, as clients do
        except wire.WireError as exc:
            logger.info("fake usbmuxd drops a client: %s", exc)
        finally:
            self._clients.discard(client)
            writer.close()

    async def _serve(self, client: _Client) -> None:
        while True:
            message = await wire.read_message(client.reader)
            if client.listening:  # usbmuxd takes no command from a listener, and drops it
                client.writer.write(wire.pack_result(client.version, message.tag, 1))
                await client.writer.drain()
                return
            if message.version not in (0, 1):
                client.writer.write(
                    wire.pack_result(client.version, message.tag, wire.RESULT_BADVERSION)
                )
            elif message.message != wire.MESSAGE_PLIST:
                client.writer.write(
                    wire.pack_result(client.version, message.tag, wire.RESULT_BADCOMMAND)
                )
            else:
                client.version = 1
                piped = self._command(client, message.tag, message.plist())
                if piped is not None:
                    device, port = piped
                    await client.writer.drain()
                    if port == wire.LOCKDOWN_PORT:
                        await device.lockdownd.serve(client.reader, client.writer)
                    else:
                        await device.lockdownd.serve_service(port, client.reader, client.writer)
                    return
            await client.writer.drain()

    def _command(
        self, client: _Client, tag: int, request: dict[str, Any]
    ) -> tuple[FakeIPhone, int] | None:
        """Answer one plist command; returns the phone and port when the socket became a
        pipe to it."""
        kind = str(request.get("MessageType", ""))
        self.requests.append(kind)
        write = client.writer.write
        if kind == "ListDevices":
            listed = [_attached(i, d) for i, d in self.devices.items()]
            write(wire.pack_plist(tag, {"DeviceList": listed}))
        elif kind == "Listen":
            write(wire.pack_result(1, tag, wire.RESULT_OK))
            client.listening = True
            for device_id, device in self.devices.items():
                write(wire.pack_plist(0, _attached(device_id, device)))
        elif kind == "ReadBUID":
            write(wire.pack_plist(tag, {"BUID": self.buid}))
        elif kind == "ReadPairRecord":
            write(self._read_pair_record(tag, request.get("PairRecordID")))
        elif kind == "SavePairRecord":
            write(wire.pack_result(1, tag, self._save_pair_record(request)))
        elif kind == "DeletePairRecord":
            record_id = request.get("PairRecordID")
            self.pair_records.pop(str(record_id), None)
            write(wire.pack_result(1, tag, wire.RESULT_OK if record_id else _EINVAL))
        elif kind == "Connect":
            return self._connect(client, tag, request)
        else:
            write(wire.pack_result(1, tag, wire.RESULT_BADCOMMAND))
        return None

    def _read_pair_record(self, tag: int, record_id: object) -> bytes:
        if not isinstance(record_id, str):
            return wire.pack_result(1, tag, _EINVAL)
        record = self.pair_records.get(record_id)
        if record is None:
            return wire.pack_result(1, tag, _ENOENT)
        return wire.pack_plist(tag, {"PairRecordData": plistlib.dumps(record)})

    def _save_pair_record(self, request: dict[str, Any]) -> int:
        record_id, data = request.get("PairRecordID"), request.get("PairRecordData")
        if not isinstance(record_id, str) or not isinstance(data, bytes):
            return _EINVAL
        try:
            self.pair_records[record_id] = plistlib.loads(data)
        except Exception:  # plistlib raises several types on bad input
            return _EINVAL
        return wire.RESULT_OK

    def _connect(
        self, client: _Client, tag: int, request: dict[str, Any]
    ) -> tuple[FakeIPhone, int] | None:
        device_id = int(request.get("DeviceID", 0))
        device = self.devices.get(device_id)
        if device is None:
            client.writer.write(wire.pack_result(1, tag, wire.RESULT_BADDEV))
            return None
        if "PortNumber" not in request:
            client.writer.write(wire.pack_result(1, tag, wire.RESULT_BADCOMMAND))
            return None
        # PortNumber is in network byte order inside the plist, as clients send it.
        port = socket.ntohs(int(request["PortNumber"]) & 0xFFFF)
        known = port == wire.LOCKDOWN_PORT or port in device.lockdownd.services
        if not known or not device.lockdown:
            client.writer.write(wire.pack_result(1, tag, wire.RESULT_CONNREFUSED))
            return None
        client.writer.write(wire.pack_result(1, tag, wire.RESULT_OK))
        client.piped_to = device_id
        return device, port


def _attached(device_id: int, device: FakeIPhone) -> dict[str, Any]:
    return {
        "MessageType": "Attached",
        "DeviceID": device_id,
        "Properties": device.properties(device_id),
    }
