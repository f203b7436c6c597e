"""The fake usbmuxd against pymobiledevice3's own usbmux client, and on the wire.

pymobiledevice3 is the client devicelab uses: if it lists, listens, reads pair records
and reaches lockdownd through the fake, devicelab's iOS code is tested end to end.
"""

from __future__ import annotations

import asyncio
import plistlib
import socket
import struct
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from devicelab.testing.fake_usbmuxd import FakeIPhone, FakeUsbmuxd

pytest.importorskip("pymobiledevice3")
from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import (
    BadDevError,
    ConnectionFailedError,
    ConnectionTerminatedError,
    NotPairedError,
)

UDID = "00008030-001A2B3C4D5E802E"
OTHER = "00008110-000A1B2C3D4E5F60"


def run[T](work: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(work, timeout=10)

    return asyncio.run(bounded())


class RawClient:
    """A usbmux client on a plain socket, to see the bytes the fake sends."""

    def __init__(self, address: str) -> None:
        host, port = address.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)

    def send(self, tag: int, body: dict[str, Any], version: int = 1, message: int = 8) -> None:
        payload = plistlib.dumps(body)
        self.sock.sendall(struct.pack("<4I", 16 + len(payload), version, message, tag) + payload)

    def recv(self) -> tuple[tuple[int, int, int, int], bytes]:
        header = self._exactly(16)
        fields = struct.unpack("<4I", header)
        return fields, self._exactly(fields[0] - 16)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError(f"closed after {len(data)} of {size} bytes")
            data += chunk
        return data


def test_list_devices_gives_usb_and_network_phones(usbmuxd: FakeUsbmuxd) -> None:
    usbmuxd.attach(FakeIPhone(UDID))
    usbmuxd.attach(FakeIPhone(OTHER, connection="Network"))
    devices = run(usbmux.list_devices())  # found through USBMUXD_SOCKET_ADDRESS
    assert [(d.devid, d.serial, d.connection_type) for d in devices] == [
        (1, UDID, "USB"),
        (2, OTHER, "Network"),
    ]
    assert run(usbmux.select_device(OTHER)).is_network  # type: ignore[union-attr]


def test_the_wire_carries_usbmuxd_headers_and_records(usbmuxd: FakeUsbmuxd) -> None:
    usbmuxd.attach(FakeIPhone(UDID, location_id=0x00140000))
    usbmuxd.attach(FakeIPhone(OTHER, connection="Network", ip="10.0.0.7"))
    client = RawClient(usbmuxd.address)
    client.send(7, {"MessageType": "ListDevices"})
    (length, version, message, tag), payload = client.recv()
    assert (length, version, message, tag) == (16 + len(payload), 1, 8, 7)
    usb, wifi = plistlib.loads(payload)["DeviceList"]
    assert usb == {
        "MessageType": "Attached",
        "DeviceID": 1,
        "Properties": {
            "ConnectionSpeed": 480000000,
            "ConnectionType": "USB",
            "DeviceID": 1,
            "LocationID": 0x00140000,
            "ProductID": 0x12A8,
            "SerialNumber": UDID,
        },
    }
    props = wifi["Properties"]
    assert props["ConnectionType"] == "Network" and props["SerialNumber"] == OTHER
    assert props["EscapedFullServiceName"].endswith("._apple-mobdev2._tcp.local.")
    assert socket.inet_ntoa(props["NetworkAddress"][4:8]) == "10.0.0.7"
    client.send(8, {"MessageType": "ReadBUID"})
    assert plistlib.loads(client.recv()[1]) == {"BUID": usbmuxd.buid}
    client.send(9, {"MessageType": "NoSuchThing"})
    (_, _, _, tag), payload = client.recv()
    assert tag == 9 and plistlib.loads(payload) == {"MessageType": "Result", "Number": 1}
    client.sock.close()
    binary = RawClient(usbmuxd.address)  # the binary protocol is answered, not served
    binary.send(10, {}, version=0, message=3)
    (_, version, message, tag), payload = binary.recv()
    assert (version, message, tag, payload) == (0, 1, 10, struct.pack("<I", 1))
    binary.sock.close()


def test_listen_reports_attach_and_detach_at_runtime(usbmuxd: FakeUsbmuxd) -> None:
    usbmuxd.attach(FakeIPhone(UDID))

    async def watch() -> list[list[str]]:
        mux: Any = await usbmux.create_mux()  # pymobiledevice3 leaves these untyped
        seen = []
        try:
            await mux.listen()
            await mux.receive_device_state_update()  # the phone already attached
            seen.append([d.serial for d in mux.devices])
            await asyncio.to_thread(usbmuxd.attach, FakeIPhone(OTHER, connection="Network"))
            await mux.receive_device_state_update()
            seen.append([f"{d.serial}/{d.connection_type}" for d in mux.devices])
            await asyncio.to_thread(usbmuxd.detach, UDID)
            await mux.receive_device_state_update()
            seen.append([d.serial for d in mux.devices])
        finally:
            await mux.close()
        return seen

    assert run(watch()) == [[UDID], [f"{UDID}/USB", f"{OTHER}/Network"], [OTHER]]
    assert "Listen" in usbmuxd.requests


def test_a_listener_takes_no_more_commands(usbmuxd: FakeUsbmuxd) -> None:
    client = RawClient(usbmuxd.address)
    client.send(1, {"MessageType": "Listen"})
    assert plistlib.loads(client.recv()[1]) == {"MessageType": "Result", "Number": 0}
    client.send(2, {"MessageType": "ListDevices"})
    assert plistlib.loads(client.recv()[1]) == {"MessageType": "Result", "Number": 1}
    with pytest.raises(EOFError):
        client.recv()
    client.sock.close()


def test_pair_record_present_for_a_paired_phone_and_enoent_otherwise(
    usbmuxd: FakeUsbmuxd,
) -> None:
    usbmuxd.attach(FakeIPhone(UDID))
    usbmuxd.attach(FakeIPhone(OTHER), paired=False)

    async def read(udid: str) -> dict[str, Any]:
        mux: Any = await usbmux.create_mux()
        assert type(mux).__name__ == "PlistMuxConnection"
        try:
            record: dict[str, Any] = await mux.get_pair_record(udid)
            return record
        finally:
            await mux.close()

    record = run(read(UDID))
    assert record["SystemBUID"] == usbmuxd.buid
    assert {"HostID", "HostCertificate", "RootCertificate", "DeviceCertificate"} <= set(record)
    with pytest.raises(NotPairedError):
        run(read(OTHER))
    client = RawClient(usbmuxd.address)  # what usbmuxd itself answers: ENOENT
    client.send(3, {"MessageType": "ReadPairRecord", "PairRecordID": OTHER})
    assert plistlib.loads(client.recv()[1]) == {"MessageType": "Result", "Number": 2}
    client.sock.close()


def test_saved_pair_records_are_read_back_and_deleted(usbmuxd: FakeUsbmuxd) -> None:
    async def save_then_read() -> dict[str, Any]:
        mux: Any = await usbmux.create_mux()
        assert type(mux).__name__ == "PlistMuxConnection"
        try:
            await mux.save_pair_record(OTHER, 1, plistlib.dumps({"HostID": "H"}))
            saved: dict[str, Any] = await mux.get_pair_record(OTHER)
            return saved
        finally:
            await mux.close()

    assert run(save_then_read()) == {"HostID": "H"}
    client = RawClient(usbmuxd.address)
    client.send(4, {"MessageType": "DeletePairRecord", "PairRecordID": OTHER})
    assert plistlib.loads(client.recv()[1])["Number"] == 0
    client.sock.close()
    assert OTHER not in usbmuxd.pair_records


def test_connect_is_refused_cleanly_except_to_lockdownd(usbmuxd: FakeUsbmuxd) -> None:
    usbmuxd.attach(FakeIPhone(UDID))
    usbmuxd.attach(FakeIPhone(OTHER, lockdown=False))

    async def connect(udid: str, port: int) -> None:
        device = await usbmux.select_device(udid)
        assert device is not None
        sock = await device.connect(port)
        sock.close()

    with pytest.raises(ConnectionFailedError, match="'Number': 3"):
        run(connect(UDID, 1234))
    with pytest.raises(ConnectionFailedError, match="'Number': 3"):
        run(connect(OTHER, 62078))
    run(connect(UDID, 62078))

    async def connect_unknown() -> None:
        mux: Any = await usbmux.create_mux()
        try:
            await mux.connect(usbmux.MuxDevice(99, "nope", "USB"), 62078)
        finally:
            await mux.close()

    with pytest.raises(BadDevError):
        run(connect_unknown())


def test_lockdownd_answers_pymobiledevice3s_lockdown_client(
    usbmuxd: FakeUsbmuxd, tmp_path: Path
) -> None:
    from pymobiledevice3.lockdown import create_using_usbmux

    usbmuxd.attach(FakeIPhone(UDID), paired=False)

    async def lockdown() -> tuple[Any, ...]:
        client = await create_using_usbmux(
            UDID, autopair=False, pairing_records_cache_folder=tmp_path
        )
        try:
            name = await client.get_value(key="DeviceName")
            return client.product_type, client.product_version, name, client.paired
        finally:
            await client.close()

    assert run(lockdown()) == ("iPhone12,1", "17.5.1", "iPhone", False)


def test_unix_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "usbmuxd"
    with FakeUsbmuxd([FakeIPhone(UDID)], path=path) as mux:
        assert mux.env == {"USBMUXD_SOCKET_ADDRESS": str(path)}
        devices = run(usbmux.list_devices(usbmux_address=str(path)))
        assert [d.serial for d in devices] == [UDID]
    assert not path.exists()


def test_detaching_a_phone_breaks_its_lockdownd_pipe(usbmuxd: FakeUsbmuxd) -> None:
    from pymobiledevice3.service_connection import ServiceConnection

    usbmuxd.attach(FakeIPhone(UDID))

    async def query_across_a_detach() -> str:
        service = await ServiceConnection.create_using_usbmux(UDID, 62078)
        try:
            reply = await service.send_recv_plist({"Request": "QueryType"})
            await asyncio.to_thread(usbmuxd.detach, UDID)
            with pytest.raises((ConnectionTerminatedError, ConnectionError)):
                await service.send_recv_plist({"Request": "QueryType"})
            return str(reply["Type"])
        finally:
            await service.close()

    assert run(query_across_a_detach()) == "com.apple.mobile.lockdown"
