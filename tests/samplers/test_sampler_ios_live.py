"""The iPhone sampler end to end through pymobiledevice3 against the fake phones of
devicelab.testing.fake_usbmuxd: the pairing session, the diagnostics relay, and the DTX
instruments server of an iOS 16 phone (sysmontap). Each way the instruments cannot be
had (no developer image, an iOS 17 phone without a tunnel, a silent sysmontap) leaves
the app's metrics as gaps that say what to do, with the battery still read."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import DeviceUnreachable, ProbeFailed
from devicelab.samplers.ios import AppFootprint, IosSampler
from devicelab.samplers.ios_sysmon import SYSMONTAP_SILENT, TUNNELD_ENV
from devicelab.samplers.log import SampleLog
from devicelab.testing.fake_dtx import APP_PID, iphone_processes
from devicelab.testing.fake_usbmuxd import IPHONE_11_IOS16, FakeIPhone, FakeUsbmuxd

pytest.importorskip("pymobiledevice3")

UDID = "00008030-001A2B3C4D5E802E"


@pytest.fixture
def usbmuxd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeUsbmuxd]:
    """A fake usbmuxd; HOME (pymobiledevice3's pair record cache) of this test only, and a
    tunneld address where nothing listens."""
    monkeypatch.setenv("HOME", str(tmp_path))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv(TUNNELD_ENV, f"127.0.0.1:{closed}")
    with FakeUsbmuxd() as mux:
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", mux.address)
        yield mux


def _sampler(tmp_path: Path, mux: FakeUsbmuxd, window_s: float = 3.0) -> IosSampler:
    log = SampleLog(tmp_path / "samples.jsonl", t0=time.monotonic())
    return IosSampler(log, UDID, process="App", sysmontap_window_s=window_s,
                      usbmux_address=mux.address)  # fmt: skip


def _by_metric(samples: list[Any]) -> dict[str, Any]:
    return {s.metric: s for s in samples}


def test_the_app_and_its_webcontent_are_sampled_on_an_ios16_phone(
    usbmuxd: FakeUsbmuxd, tmp_path: Path
) -> None:
    usbmuxd.attach(FakeIPhone(UDID, values=dict(IPHONE_11_IOS16)))
    samples = _by_metric(_sampler(tmp_path, usbmuxd).read_once())
    # App 142.0 MB + its WebContent 187.6 MB; Safari's WebContent (61.7 MB) is not the app's.
    assert samples["memory.footprint_mb"].value == pytest.approx(329.6)
    # (23.5 + 31.2) % of one core over the phone's 6 cores.
    assert samples["cpu.app_pct"].value == pytest.approx(9.12)
    assert samples["memory.footprint_mb"].source == "sysmontap"
    assert samples["battery.level_pct"].value == 85.0
    # Every sample is in the log before the reading returns.
    logged = (tmp_path / "samples.jsonl").read_text()
    assert '"memory.footprint_mb"' in logged and '"battery.level_pct"' in logged


def test_without_the_developer_image_the_app_is_a_gap_naming_the_mount(
    usbmuxd: FakeUsbmuxd, tmp_path: Path
) -> None:
    usbmuxd.attach(FakeIPhone(UDID, values=dict(IPHONE_11_IOS16), developer_image=False))
    samples = _by_metric(_sampler(tmp_path, usbmuxd).read_once())
    gap = samples["memory.footprint_mb"]
    assert gap.value is None
    assert "developer disk image is not mounted" in gap.note
    assert "pymobiledevice3 mounter auto-mount" in gap.note
    assert samples["battery.level_pct"].value == 85.0


def test_an_ios17_phone_without_tunneld_is_a_gap_naming_the_tunnel(
    usbmuxd: FakeUsbmuxd, tmp_path: Path
) -> None:
    usbmuxd.attach(FakeIPhone(UDID))  # iOS 17.5.1
    sampler = _sampler(tmp_path, usbmuxd)
    samples = _by_metric(sampler.read_once())
    note = samples["cpu.app_pct"].note
    assert samples["cpu.app_pct"].value is None
    assert "iOS 17.5.1" in note and "no tunneld answers" in note
    assert "sudo pymobiledevice3 remote tunneld" in note
    assert samples["battery.current_ma"].value == -312.0
    # The memory checks' reader says the same, as an environment problem.
    with pytest.raises(DeviceUnreachable, match="developer tunnel"):
        AppFootprint(sampler)()


def test_a_tunneld_without_a_tunnel_to_the_phone_says_so(
    usbmuxd: FakeUsbmuxd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.server
    import threading

    class NoTunnels(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # tunneld's listing: UDID -> tunnels; none open
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoTunnels)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(TUNNELD_ENV, f"127.0.0.1:{server.server_address[1]}")
        usbmuxd.attach(FakeIPhone(UDID))  # iOS 17.5.1
        samples = _by_metric(_sampler(tmp_path, usbmuxd).read_once())
    finally:
        server.shutdown()
        server.server_close()
    note = samples["memory.footprint_mb"].note
    assert f"has no tunnel to {UDID}" in note and "Developer Mode" in note
    assert samples["battery.level_pct"].value == 85.0


def test_a_silent_sysmontap_is_a_gap_not_a_zero(usbmuxd: FakeUsbmuxd, tmp_path: Path) -> None:
    phone = FakeIPhone(UDID, values=dict(IPHONE_11_IOS16), sysmontap_silent=True)
    usbmuxd.attach(phone)
    sampler = _sampler(tmp_path, usbmuxd, window_s=1.0)
    samples = _by_metric(sampler.read_once())
    assert samples["memory.footprint_mb"].value is None
    assert samples["memory.footprint_mb"].note == SYSMONTAP_SILENT
    with pytest.raises(ProbeFailed, match="no process data"):
        AppFootprint(sampler)()


def test_the_memory_reader_follows_the_app_and_refuses_a_restart(
    usbmuxd: FakeUsbmuxd, tmp_path: Path
) -> None:
    footprint = {"app": 142_000_000, "pid": APP_PID}

    def table() -> list[Mapping[str, Any]]:
        rows = [dict(p) for p in iphone_processes()]
        for row in rows:
            if row["name"] == "App":
                row.update(physFootprint=footprint["app"], pid=footprint["pid"])
            if row.get("responsiblePID") == APP_PID:
                row["responsiblePID"] = footprint["pid"]
        return rows

    usbmuxd.attach(FakeIPhone(UDID, values=dict(IPHONE_11_IOS16), processes=table))
    sampler = _sampler(tmp_path, usbmuxd)
    reader = AppFootprint(sampler)
    with reader:
        before = reader()
        footprint["app"] += 24_000_000  # the app loads its data
        after = reader()
        assert after - before == pytest.approx(24.0)
        footprint["pid"] = 990  # jetsam killed it, the user opened it again
        with pytest.raises(ProbeFailed, match="restarted between two memory reads"):
            reader()
    # Outside the block a new pid is just the app now.
    assert reader() == pytest.approx(142.0 + 24.0 + 187.6)
    assert sampler.usage is not None and sampler.usage.pid == 990


def test_the_memory_reader_works_from_async_code_too(usbmuxd: FakeUsbmuxd, tmp_path: Path) -> None:
    import asyncio

    usbmuxd.attach(FakeIPhone(UDID, values=dict(IPHONE_11_IOS16)))
    reader = AppFootprint(_sampler(tmp_path, usbmuxd))

    async def suite() -> float:
        # A running event loop in this thread: the reading runs in a loop of its own.
        return reader()

    assert asyncio.run(suite()) == pytest.approx(329.6)
