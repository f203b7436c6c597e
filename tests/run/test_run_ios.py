"""`devicelab run` on an iPhone, end to end, with real peers on loopback: pymobiledevice3
talking to devicelab.testing.fake_usbmuxd as the phone's usbmuxd and lockdownd, a real
Appium 3 server (tools/appium) with the chromium driver (real chromedriver + Chromium)
standing in for the app's WebView, a real mitmproxy shaping 4G on the address the
inventory names, the reference backend on a managed PostgreSQL of its own.

An iPhone's Wi-Fi proxy is set by hand; here the stand-in's launch flags are that
setting (``--proxy-server`` = Settings > Wi-Fi > Configure Proxy). Without them the app
cannot reach the backend, whose name only the proxy resolves, and the run says what to
set on the phone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devicelab.platforms.appium import AppiumServer
from devicelab.report import load_results
from devicelab.testing.adb_server import free_port
from devicelab.testing.fake_lockdownd import IPHONE_BATTERY
from devicelab.testing.fake_usbmuxd import IPHONE_11_IOS16, FakeIPhone, FakeUsbmuxd
from devicelab.testing.standins import lab_state, standin_processes, webview_capabilities

UDID = "00008030-001A2B3C4D5E802E"
ABSENT = "00008110-000A1B2C3D4E5F60"
ON_BATTERY = "00008101-000C1D2E3F405162"
IOS16 = "00008030-0011223344556677"
#: A launch flag (ignored by Chromium) that marks the stand-in of the iOS 16 phone, whose
#: process table is that browser's (standin_processes).
IOS16_STANDIN = "--devicelab-standin=ios16"


class DrainingBattery:
    """An IOPMPowerSource entry whose level falls 360 %/h (0.1 % a second) from 85 %."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self) -> dict[str, Any]:
        level = 85.0 - 0.1 * (time.monotonic() - self.started)
        return {**IPHONE_BATTERY, "CurrentCapacity": round(level, 2)}


def devicelab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicelab", *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


def run(
    env: dict[str, str], inventory: Path, device: str, network: str, out: Path, *checks: str
) -> subprocess.CompletedProcess[str]:
    """``devicelab run`` of ``device`` in this lab, only ``checks`` (all when none)."""
    selection = [arg for check in checks for arg in ("--scenario", check)]
    return devicelab(
        "run", "--device", device, "--network", network, "--inventory", str(inventory),
        "--out", str(out), *selection, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lab_env() -> Iterator[dict[str, str]]:
    """A DEVICELAB_STATE of its own (cluster) and a fake usbmuxd with the iPhone on it."""
    with lab_state("dl-run-ios-") as env, FakeUsbmuxd() as mux:
        mux.attach(FakeIPhone(UDID))
        mux.attach(FakeIPhone(ON_BATTERY, battery=DrainingBattery()))
        # An iOS 16 phone serves its instruments over lockdownd; its app and WebContent
        # processes are the stand-in browser's, with their real memory and CPU.
        processes = standin_processes(IOS16_STANDIN)
        mux.attach(FakeIPhone(IOS16, values=dict(IPHONE_11_IOS16), processes=processes))
        # iOS 17 phones need tunneld for their instruments: here none answers.
        tunneld = f"127.0.0.1:{free_port()}"
        yield {**env, **mux.env, "DEVICELAB_TUNNELD": tunneld}


@pytest.fixture(scope="module")
def appium(standins: None, lab_env: dict[str, str]) -> Iterator[AppiumServer]:
    """The module's Appium (skipped, with the reason, when the stand-in cannot run here)."""
    with AppiumServer(log_file=Path(lab_env["DEVICELAB_STATE"]) / "appium.log") as server:
        yield server


@pytest.fixture(scope="module")
def inventory(lab_env: dict[str, str], appium: AppiumServer) -> tuple[Path, int]:
    """iPhones on the fake usbmuxd whose Appium session is the chromium driver: one whose
    Wi-Fi proxy is set (the launch flags), one whose is not, one absent, one with no
    ``proxy`` in the inventory. Returns the file and the proxy's port."""
    state = Path(lab_env["DEVICELAB_STATE"])
    port = free_port()
    wifi_proxy = [f"--proxy-server=http://127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>"]

    def iphone(
        udid: str = UDID, proxy_set: bool = True, proxy: bool = True, *flags: str
    ) -> dict[str, Any]:
        device: dict[str, Any] = {
            "platform": "ios", "model": "iPhone 11", "os": "iOS 17", "udid": udid,
            "app": {"id": "app.messaging.test"},
        }  # fmt: skip
        device["appium"] = {
            "url": appium.url,
            "capabilities": webview_capabilities(*(wifi_proxy * proxy_set), *flags),
        }
        if proxy:
            device["proxy"] = {"listen": f"127.0.0.1:{port}", "allow": ["127.0.0.1/32"]}
        return device

    devices = {
        "iphone": iphone(),
        "iphone-proxy-not-set": iphone(proxy_set=False),
        "iphone-absent": iphone(udid=ABSENT),
        "iphone-no-proxy": iphone(proxy=False),
        "iphone-on-battery": {**iphone(udid=ON_BATTERY), "power": {"kind": "manual"}},
        "iphone-ios16": iphone(IOS16, True, True, IOS16_STANDIN),
    }
    path = state / "inventory.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    return path, port


@pytest.mark.slow
def test_run_on_an_iphone_through_4g_measures_in_the_webview_stand_in(
    lab_env: dict[str, str], inventory: tuple[Path, int], tmp_path: Path
) -> None:
    path, _port = inventory
    out = tmp_path / "out"
    checks = ["message_delivery", "memory_100_conversations"]
    result = run(lab_env, path, "iphone", "4g", out, *checks)
    # 3: the memory check could not run (below); nothing failed.
    assert result.returncode == 3, result.stdout + result.stderr
    results = load_results(out / "results.json")
    device = results.run.device
    assert device is not None
    # Read from the phone's lockdownd through usbmuxd, not copied from the inventory.
    assert (device.platform, device.model) == ("ios", "iPhone 11 (iPhone12,1)")
    assert device.os == "iOS 17.5.1"
    network = results.run.network
    assert network is not None and network.achieved is not None
    assert network.achieved.rtt_ms is not None and 150 <= network.achieved.rtt_ms <= 200
    by_id = {c.id: c for c in results.checks}
    delivery = by_id["message_delivery"]
    assert delivery.status == "pass", delivery.reason
    assert delivery.target is not None and "4G" in delivery.target.source
    # Over the shaped 4G link: a round of delivery costs at least the one-way delays.
    assert delivery.summary is not None and delivery.summary.p50 >= 85
    # An iOS 17 phone's instruments are behind a developer tunnel, and no tunneld answers.
    memory = by_id["memory_100_conversations"]
    assert memory.status == "error", memory
    assert "sudo pymobiledevice3 remote tunneld" in memory.reason
    # The battery, read through lockdownd's diagnostics relay in a TLS pairing session.
    series = {s.name: s for s in results.series}
    level = series["battery.level_pct"]
    assert level.v and set(level.v) == {85.0}, level
    assert set(series["battery.current_ma"].v) == {-312.0}  # the unsigned 64-bit encoding
    assert "backend.devicelab.test" in result.stderr + result.stdout


@pytest.mark.slow
def test_memory_on_an_ios16_iphone_is_the_app_and_its_webcontent_through_sysmontap(
    lab_env: dict[str, str], inventory: tuple[Path, int], tmp_path: Path
) -> None:
    path, _port = inventory
    out = tmp_path / "out"
    checks = ["memory_100_conversations", "memory_1000_messages", "memory_leak"]
    short_leak = {"DEVICELAB_LEAK_DURATION_S": "10", "DEVICELAB_LEAK_SAMPLE_S": "2"}
    result = run({**lab_env, **short_leak}, path, "iphone-ios16", "4g", out, *checks)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    results = load_results(out / "results.json")
    assert results.run.device is not None and results.run.device.os == "iOS 16.7.8"
    by_id = {c.id: c for c in results.checks}
    for check_id in ("memory_100_conversations", "memory_1000_messages"):
        check = by_id[check_id]
        assert check.status in ("pass", "fail"), check
        assert check.value is not None and check.value >= 0
        # The stand-in browser's real processes, read through the DTX instruments server:
        # a browser with its renderers holds tens of MB at least.
        before = check.evidence["footprint_before_mb"]
        assert isinstance(before, float) and before > 30, check.evidence
        assert "physFootprint" in str(check.evidence["how"])
    # The leak trend is the footprint's, read through the same instruments.
    leak = by_id["memory_leak"]
    assert leak.status in ("pass", "fail"), leak
    assert isinstance(leak.value, float) and leak.unit == "MB_per_min"
    assert leak.evidence["series"] == "memory.footprint_mb"
    assert leak.evidence["readings"] >= 3, leak.evidence
    assert float(str(leak.evidence["heap_first_mb"])) > 30
    assert "safariGarbageCollect" in str(leak.evidence["how"])
    # The background sampler read the app's memory and CPU all along.
    series = {s.name: s for s in results.series}
    assert len(series["memory.footprint_mb"].v) >= 2
    assert "cpu.app_pct" in series and "battery.level_pct" in series
    samples = (out / "samples.jsonl").read_text()
    assert '"source":"sysmontap"' in samples.replace(" ", "")


@pytest.mark.slow
def test_a_phone_not_using_the_proxy_exits_3_naming_the_wifi_setting(
    lab_env: dict[str, str], inventory: tuple[Path, int], tmp_path: Path
) -> None:
    path, port = inventory
    result = run(lab_env, path, "iphone-proxy-not-set", "4g", tmp_path / "out", "message_delivery")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "cannot reach the lab backend through the shaped proxy" in result.stderr
    assert f"Configure Proxy > Manual, server 127.0.0.1, port {port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_absent_iphone_exits_3_before_the_backend_starts(
    lab_env: dict[str, str], inventory: tuple[Path, int], tmp_path: Path
) -> None:
    path, _port = inventory
    result = run(lab_env, path, "iphone-absent", "4g", tmp_path / "out")
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"ios device iphone-absent ({ABSENT}) is absent" in result.stderr
    assert "plug the iPhone in" in result.stderr
    assert "starting the backend" not in result.stderr + result.stdout
    assert not (tmp_path / "out" / "results.json").exists()


def test_an_iphone_without_a_proxy_address_is_bad_input(
    lab_env: dict[str, str], inventory: tuple[Path, int], tmp_path: Path
) -> None:
    path, _port = inventory
    result = run(lab_env, path, "iphone-no-proxy", "4g", tmp_path / "out")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "devices.iphone-no-proxy.proxy is missing" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_a_proxy_address_without_a_fixed_port_is_a_config_error(tmp_path: Path) -> None:
    from devicelab.errors import ConfigError
    from devicelab.models import DeviceProxy

    with pytest.raises(ValueError, match="fixed port"):
        DeviceProxy(listen="192.168.50.10:0", allow=["192.168.50.0/24"])
    with pytest.raises(ValueError, match="not a network"):
        DeviceProxy(listen="192.168.50.10:8899", allow=["192.168.50.0/33"])
    bad = tmp_path / "inventory.yaml"
    bad.write_text(
        json.dumps({"devices": {"p": {"platform": "ios", "model": "x", "os": "iOS 17",
                                      "udid": UDID, "proxy": {"listen": "wifi:8899",
                                                              "allow": ["10.0.0.0/8"]}}}})
    )  # fmt: skip
    from devicelab import config

    with pytest.raises(ConfigError, match=r"devices\.p\.proxy\.listen"):
        config.load_inventory(bad)


def test_a_taken_proxy_port_names_the_fixed_port_to_free_or_change() -> None:
    # The hint said "pick a free port (0 picks one)": the iPhone's Wi-Fi proxy names a
    # fixed port, so 0 is the one thing that cannot work there.
    import socket

    from devicelab.config import network_profile
    from devicelab.errors import EnvironmentProblem
    from devicelab.lab_phone import start_phone_proxy
    from devicelab.models import Device

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        device = Device.model_validate(
            {"platform": "ios", "model": "iPhone 11", "os": "iOS 17", "udid": UDID,
             "proxy": {"listen": listen, "allow": ["127.0.0.1/32"]}}
        )  # fmt: skip
        object.__setattr__(device, "id", "iphone")
        with pytest.raises(EnvironmentProblem) as caught:
            start_phone_proxy(device, network_profile("4g"))
    assert f"cannot listen on {listen}: address already in use" in caught.value.message
    assert "0 picks one" not in caught.value.hint
    assert f"stop what listens on {listen}" in caught.value.hint
    assert (
        "devices.iphone.proxy.listen" in caught.value.hint
        and "fixed free port" in caught.value.hint
    )


def test_an_inventory_listen_address_of_another_machine_names_the_inventory_field() -> None:
    # ShapedProxy now refuses it up front (BadInput) with the CLI's general hint: the
    # iPhone's hint must still say which inventory field to fix.
    from devicelab.config import network_profile
    from devicelab.errors import BadInput
    from devicelab.lab_phone import start_phone_proxy
    from devicelab.models import Device

    device = Device.model_validate(
        {"platform": "ios", "model": "iPhone 11", "os": "iOS 17", "udid": UDID,
         "proxy": {"listen": "198.51.100.1:8080", "allow": ["198.51.100.0/24"]}}
    )  # fmt: skip
    object.__setattr__(device, "id", "iphone")
    with pytest.raises(BadInput) as caught:
        start_phone_proxy(device, network_profile("4g"))
    assert "cannot listen on 198.51.100.1:8080" in caught.value.message
    assert "devices.iphone.proxy.listen" in caught.value.hint


def _background_run(
    lab_env: dict[str, str], inventory: tuple[Path, int], out: Path, seconds: int
) -> tuple[subprocess.CompletedProcess[str], Any]:
    path, _port = inventory
    env = {**lab_env, "DEVICELAB_BACKGROUND_S": str(seconds)}
    result = run(env, path, "iphone", "none", out, "background_disconnect")
    (check,) = load_results(out / "results.json").checks
    return result, check


@pytest.mark.slow
def test_the_app_drops_realtime_after_a_minute_in_the_background_and_comes_back(
    lab_env: dict[str, str], inventory: tuple[Path, int], tmp_path: Path
) -> None:
    result, check = _background_run(lab_env, inventory, tmp_path / "out", 75)
    assert result.returncode == 0, result.stdout + result.stderr
    assert check.status == "pass", check.reason
    # The test app's policy: @capacitor/app's appStateChange, then a 60 s timer.
    assert check.value is not None and 59.5 <= check.value <= 65
    assert check.evidence["disconnected"] is True
    assert check.evidence["reconnected_ms"] is not None, "B's channel never came back"
    events = [e["event"] for e in check.evidence["events"]]
    assert events.index("hidden") < events.index("disconnected") < events.index("visible")


@pytest.mark.slow
def test_a_short_background_keeps_realtime_and_fails_the_check(
    lab_env: dict[str, str], inventory: tuple[Path, int], tmp_path: Path
) -> None:
    result, check = _background_run(lab_env, inventory, tmp_path / "out", 10)
    assert result.returncode == 1, result.stdout + result.stderr
    assert check.status == "fail"
    assert "Realtime stayed connected" in check.reason
    assert check.evidence["disconnected"] is False
    assert check.value is not None and 9 <= check.value <= 13


@pytest.mark.slow
def test_battery_drain_on_an_iphone_reads_the_ioregistry_on_battery(
    lab_env: dict[str, str], inventory: tuple[Path, int], tmp_path: Path
) -> None:
    path, _port = inventory
    env = {**lab_env, "DEVICELAB_BATTERY_DURATION_S": "12", "DEVICELAB_BATTERY_SAMPLE_S": "2"}
    result = run(env, path, "iphone-on-battery", "none", tmp_path / "out", "battery_drain")
    assert result.returncode == 1, result.stdout + result.stderr
    (check,) = load_results(tmp_path / "out" / "results.json").checks
    # 360 %/h, judged against the story's < 10 %/h.
    assert check.status == "fail" and check.value is not None, check
    assert 250 <= check.value <= 450, check.value
    assert check.evidence["power"] == "manual" and check.evidence["readings"] >= 5
    assert "IORegistry" in str(check.evidence["how"])


def test_battery_drain_on_an_iphone_without_a_power_cut_skips(
    lab_env: dict[str, str], inventory: tuple[Path, int], tmp_path: Path
) -> None:
    path, _port = inventory
    result = run(lab_env, path, "iphone", "none", tmp_path / "out", "battery_drain")
    assert result.returncode == 0, result.stdout + result.stderr
    (check,) = load_results(tmp_path / "out" / "results.json").checks
    assert check.status == "skip" and "real drain needs the power cut" in check.reason
