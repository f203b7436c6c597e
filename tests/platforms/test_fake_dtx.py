"""The fake iPhone's instruments server through pymobiledevice3's own DVT client, end to
end over the fake usbmuxd: lockdownd starts the service (TLS, or a TLS handshake then
plaintext before iOS 14), DTX carries the deviceinfo calls and sysmontap's samples.

The server side (devicelab.testing.dtx_wire, fake_dtx) shares no code with
pymobiledevice3.dtx, so each checks the other's reading of the protocol."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from devicelab.testing import dtx_wire
from devicelab.testing.fake_dtx import APP_PID, SYSMONTAP, iphone_processes
from devicelab.testing.fake_lockdownd import DVT_LEGACY, DVT_SECURE_PROXY
from devicelab.testing.fake_usbmuxd import IPHONE_11_IOS16, FakeIPhone, FakeUsbmuxd

pytest.importorskip("pymobiledevice3")

UDID = "00008030-001A2B3C4D5E802E"
REQUIRED = ["pid", "name", "ppid", "responsiblePID", "cpuUsage", "physFootprint",
            "memResidentSize", "memVirtualSize", "threadCount"]  # fmt: skip


def _phone(usbmuxd: FakeUsbmuxd, version: str = "16.7.8", **fields: Any) -> FakeIPhone:
    phone = FakeIPhone(UDID, values={**IPHONE_11_IOS16, "ProductVersion": version}, **fields)
    usbmuxd.attach(phone)
    return phone


def _with_dvt(usbmuxd: FakeUsbmuxd, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``work(dvt)`` inside a DvtProvider on the attached phone; returns its result."""
    from pymobiledevice3.lockdown import create_using_usbmux
    from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider

    async def main() -> Any:
        lockdown = await create_using_usbmux(serial=UDID, usbmux_address=usbmuxd.address)
        async with lockdown, DvtProvider(lockdown) as dvt:
            return await work(dvt)

    return asyncio.run(asyncio.wait_for(main(), timeout=10))


async def _hardware(dvt: Any) -> tuple[dict[str, Any], list[str]]:
    from pymobiledevice3.services.dvt.instruments.device_info import DeviceInfo

    async with DeviceInfo(dvt) as info:
        return await info.hardware_information(), await info.sysmon_process_attributes()


def test_device_info_answers_an_iphone_11s_hardware_and_sysmon_attributes(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    phone = _phone(usbmuxd)
    hardware, attributes = _with_dvt(usbmuxd, _hardware)
    assert hardware["numberOfCpus"] == 6 and hardware["numberOfPhysicalCpus"] == 6
    assert hardware["hwCPUtype"] == 16777228
    assert set(REQUIRED) <= set(attributes)
    assert list(phone.lockdownd.services.values()) == [DVT_SECURE_PROXY]
    server = phone.lockdownd.instruments_servers[0]
    assert server.client_capabilities is not None
    assert server.client_capabilities["com.apple.private.DTXConnection"] == 1
    assert ("com.apple.instruments.server.services.deviceinfo", "hardwareInformation") in (
        server.calls
    )


def test_sysmontap_rows_follow_the_phones_process_table(usbmuxd: FakeUsbmuxd, home: Path) -> None:
    from pymobiledevice3.services.dvt.instruments.sysmontap import Sysmontap

    calls = itertools.count()

    def growing() -> list[Mapping[str, Any]]:
        n = next(calls)  # call 0 makes the first sample, which pymobiledevice3 drops
        table = iphone_processes()
        for process in table:
            if process["pid"] == APP_PID:
                process.update(physFootprint=100_000_000 + n * 10_000_000, cpuUsage=20.0 + n)
        return table

    phone = _phone(usbmuxd, processes=growing)

    async def two_samples(dvt: Any) -> tuple[list[list[dict[str, Any]]], float]:
        tap = await Sysmontap.create(dvt, interval=100)
        samples: list[list[dict[str, Any]]] = []
        stamps: list[float] = []
        async with tap:
            async for entries in tap.iter_processes():
                samples.append(entries)
                stamps.append(time.monotonic())
                if len(samples) == 2:
                    break
        return samples, stamps[1] - stamps[0]

    samples, gap = _with_dvt(usbmuxd, two_samples)
    apps = [next(r for r in rows if r["name"] == "App") for rows in samples]
    assert [a["physFootprint"] for a in apps] == [110_000_000, 120_000_000]
    assert [a["cpuUsage"] for a in apps] == [21.0, 22.0]
    assert apps[0]["pid"] == APP_PID and apps[0]["threadCount"] == 28
    web = [r for r in samples[0] if r["name"] == "com.apple.WebKit.WebContent"]
    assert sorted(r["responsiblePID"] for r in web) == [640, APP_PID]
    assert 0.08 <= gap < 1.0  # pushed every "ur" ms, as configured
    server = phone.lockdownd.instruments_servers[0]
    assert server.sysmontap_config is not None and server.sysmontap_config["ur"] == 100
    assert (SYSMONTAP, "stop") in server.calls
    deadline = time.monotonic() + 2
    while server.pushing and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not server.pushing  # stop, then the closed connection, end the pushes


def test_a_silent_sysmontap_sends_system_rows_without_processes(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    from pymobiledevice3.services.dvt.instruments.sysmontap import Sysmontap

    _phone(usbmuxd, sysmontap_silent=True)

    async def listen(dvt: Any) -> dict[str, Any]:
        tap = await Sysmontap.create(dvt, interval=100)
        async with tap:
            row: dict[str, Any] = await anext(aiter(tap))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(tap.iter_processes()), timeout=0.5)
        return row

    row = _with_dvt(usbmuxd, listen)
    assert "Processes" not in row
    assert row["CPUCount"] == 6 and row["EnabledCPUs"] == 6
    assert "CPU_TotalLoad" in row["SystemCPUUsage"]


def test_without_the_developer_image_lockdownd_refuses_instruments(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    from pymobiledevice3.exceptions import InvalidServiceError

    phone = _phone(usbmuxd, developer_image=False)
    with pytest.raises(InvalidServiceError):
        _with_dvt(usbmuxd, _hardware)
    assert phone.lockdownd.services == {}


def test_on_ios_17_lockdownd_refuses_instruments_even_with_the_image(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    from pymobiledevice3.exceptions import InvalidServiceError

    phone = FakeIPhone(UDID)  # IPHONE_11: iOS 17.5.1
    usbmuxd.attach(phone)
    with pytest.raises(InvalidServiceError):
        _with_dvt(usbmuxd, _hardware)
    assert phone.lockdownd.offers(DVT_SECURE_PROXY) is False
    assert phone.lockdownd.offers(DVT_LEGACY) is False


def test_before_ios_14_instruments_speak_plaintext_after_a_tls_handshake(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    phone = _phone(usbmuxd, version="13.7")
    hardware, _ = _with_dvt(usbmuxd, _hardware)
    assert hardware["numberOfCpus"] == 6
    assert list(phone.lockdownd.services.values()) == [DVT_LEGACY]


def test_unknown_channels_and_selectors_are_errors(usbmuxd: FakeUsbmuxd, home: Path) -> None:
    from pymobiledevice3.dtx import DTXNsError
    from pymobiledevice3.exceptions import UnrecognizedSelectorError
    from pymobiledevice3.services.dvt.instruments.device_info import DeviceInfo

    _phone(usbmuxd)

    async def misuse(dvt: Any) -> list[str]:
        raised: list[str] = []
        with pytest.raises(DTXNsError) as unknown:
            await dvt.dtx.open_channel("com.apple.instruments.server.services.nosuch")
        raised.append(str(unknown.value))
        async with DeviceInfo(dvt) as info:
            with pytest.raises(UnrecognizedSelectorError):
                await info.mach_kernel_name()
            # The connection survives both: a known call still answers.
            raised.append(str((await info.hardware_information())["numberOfCpus"]))
        return raised

    unknown, cpus = _with_dvt(usbmuxd, misuse)
    assert "nosuch" in unknown and cpus == "6"


def test_a_phones_worth_of_processes_is_split_into_fragments_and_reassembled(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    from pymobiledevice3.services.dvt.instruments.sysmontap import Sysmontap

    many = [{"pid": 1000 + i, "name": f"proc{i}", "physFootprint": i} for i in range(400)]
    _phone(usbmuxd, processes=lambda: many)
    payload = dtx_wire.archive([{"Processes": {p["pid"]: [0] * 37 for p in many}}])
    packed = dtx_wire.DtxMessage(dtx_wire.MessageType.OBJECT, 1, payload=payload).pack()
    assert struct.unpack_from("<IIHH", packed)[3] > 1  # a header fragment, then the pieces

    async def one_sample(dvt: Any) -> list[dict[str, Any]]:
        tap = await Sysmontap.create(dvt, interval=50)
        async with tap:
            return await anext(tap.iter_processes())

    rows = _with_dvt(usbmuxd, one_sample)
    assert len(rows) == 400
    assert {r["name"]: r["physFootprint"] for r in rows}["proc399"] == 399


@pytest.mark.parametrize(
    "value",
    [
        {"ur": 500, "procAttrs": ["pid", "name"], "cpuUsage": True, "x": None, "f": 1.5},
        [{"Processes": {812: [1, None, "App", 2.5]}, "Type": 5}],
        "_requestChannelWithCode:identifier:",
        (1 << 64) - 312,
    ],
)
def test_our_archives_and_bpylist2s_read_each_other(value: Any) -> None:
    from bpylist2 import archiver  # pymobiledevice3's archiver

    expected = list(value) if isinstance(value, tuple) else value
    assert archiver.unarchive(dtx_wire.archive(value)) == expected
    assert dtx_wire.unarchive(archiver.archive(value)) == expected


def test_the_auxiliary_of_a_call_parses_to_its_arguments() -> None:
    from pymobiledevice3.dtx.message_aux import MessageAux
    from pymobiledevice3.dtx.primitives import PInt32

    aux = MessageAux.build([PInt32(3), "com.apple.instruments.server.services.sysmontap"])
    assert dtx_wire.parse_aux(aux) == [3, SYSMONTAP]
    assert MessageAux.parse(dtx_wire.build_aux([{"a": 1}, None, 7])) == [{"a": 1}, None, 7]
