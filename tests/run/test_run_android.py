"""`devicelab run` on an android device, end to end, with real peers on loopback: the real
adb server (on a private port, HOME in a temporary folder) connected to
devicelab.testing.fake_adbd as the phone, a real Appium 3 server (tools/appium), the
chromium driver with real chromedriver + Chromium standing in for the app's WebView (the
same chromedriver protocol Appium uses for an Android WebView), a real mitmproxy shaping
4G, the reference backend on a managed PostgreSQL of its own.

The route is really applied to the fake phone (adb reverse + global http_proxy) and
undone after, whatever the run's outcome; the fake driver covers the errors. The app's
samplers read the fake phone over adb: with no app process (the stand-in is none) they
leave gaps; with one whose PSS grows, the memory checks measure the increase.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devicelab import lab_phone
from devicelab.config import load_networks
from devicelab.journal import Journal
from devicelab.lab import Lab, app_build_dir
from devicelab.platforms.appium import AppiumServer
from devicelab.report import load_results
from devicelab.testing.adb_server import PrivateAdbServer, free_port
from devicelab.testing.fake_adbd import MEMINFO, FakeAdbd, ShellResult
from devicelab.testing.standins import webview_capabilities

NO_WEBVIEW_APP = '<app><MockListView id="conversations"/></app>\n'


def devicelab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicelab", *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lab_env(adb: PrivateAdbServer) -> dict[str, str]:
    """The environment of a devicelab process in this lab (state dir, private adb)."""
    return adb.env


@pytest.fixture(scope="module")
def phone(adb: PrivateAdbServer) -> Iterator[FakeAdbd]:
    """The fake phone, connected to the private adb server (no http_proxy set yet)."""
    with adb.phone() as fake:
        yield fake


@pytest.fixture(scope="module")
def appium(standins: None, lab_env: dict[str, str]) -> Iterator[AppiumServer]:
    """The module's Appium (skipped, with the reason, when the stand-in cannot run here)."""
    with AppiumServer(log_file=Path(lab_env["DEVICELAB_STATE"]) / "appium.log") as server:
        yield server


@pytest.fixture(scope="module")
def inventory(lab_env: dict[str, str], phone: FakeAdbd, appium: AppiumServer) -> Path:
    """Android devices on the fake phone: one whose Appium session is the chromium driver
    (the WebView stand-in), and fake-driver ones that fail as real setups do."""
    state = Path(lab_env["DEVICELAB_STATE"])
    (state / "native-only.xml").write_text(NO_WEBVIEW_APP)
    chromium = webview_capabilities()
    fake = {"platformName": "Fake", "appium:automationName": "Fake"}

    def android(
        caps: dict[str, Any] | None, url: str = appium.url, serial: str = phone.serial
    ) -> dict[str, Any]:
        device: dict[str, Any] = {
            "platform": "android", "model": "Pixel 6 (fake adbd)", "os": "Android 13",
            "serial": serial, "app": {"id": "app.messaging.test"},
        }  # fmt: skip
        if caps is not None:
            device["appium"] = {"url": url, "capabilities": caps}
        return device

    devices = {
        "phone": android(chromium),
        # Nothing listens at this loopback URL: the lab starts a local Appium there.
        "phone-native-only": android(
            {
                **fake,
                "appium:app": str(state / "native-only.xml"),
                "appium:autoWebviewTimeout": 1500,
            },
            url=f"http://127.0.0.1:{free_port()}",
        ),
        "phone-no-session": android(fake),  # the fake driver needs appium:app
        "phone-bad-caps": android({"platformName": "Android", "automationName": "UiAutomator2"}),
        "phone-no-appium": android(None),
        "phone-absent": android(chromium, serial="R5CT-NOT-ATTACHED"),
    }
    path = state / "inventory.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    return path


def _route_is_undone(phone: FakeAdbd) -> None:
    assert phone.reverses == {}, "adb reverse left behind"
    assert phone.settings["global"].get("http_proxy") == ":0", "http_proxy left set"
    assert "stay_on_while_plugged_in" not in phone.settings["global"], "screen setting left"


@pytest.mark.slow
def test_run_on_android_through_4g_measures_in_the_webview_stand_in(
    lab_env: dict[str, str], phone: FakeAdbd, inventory: Path, tmp_path: Path
) -> None:
    assert (app_build_dir() / "index.html").is_file(), "run ./dev/setup: it builds the app"
    out = tmp_path / "out"
    done = devicelab(
        "run", "--device", "phone", "--network", "4g", "--out", str(out),
        "--inventory", str(inventory),
        "--scenario", "message_delivery", "--scenario", "reconnect",
        "--scenario", "memory_100_conversations", "--scenario", "local_cache_query_50",
        "--scenario", "local_cache_search", "--scenario", "local_cache_conversations",
        "--scenario", "battery_drain",
        env=lab_env,
    )  # fmt: skip
    # 1 when a timed check failed on this machine, else 0.
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "Traceback" not in done.stderr

    results = load_results(out / "results.json")
    device = results.run.device
    assert device is not None and device.platform == "android" and device.id == "phone"
    assert (device.model, device.os) == ("Google Pixel 6", "Android 13 (API 33)")  # getprop

    checks = {c.id: c for c in results.checks}
    profile = load_networks().profiles["4g"]
    assert profile.rtt_ms is not None
    delivery = checks["message_delivery"]
    assert delivery.status in ("pass", "fail"), delivery.reason
    assert delivery.evidence["lost"] == 0 and len(delivery.samples) == 20
    # The send and B's websocket frame both cross the shaped link: at least one RTT.
    assert min(delivery.samples) >= 0.9 * profile.rtt_ms, delivery.samples
    assert delivery.target is not None and delivery.target.column == "4g"
    reconnect = checks["reconnect"]
    assert reconnect.status in ("pass", "fail"), reconnect.reason
    for cycle in reconnect.evidence["cycles"]:
        assert "CHANNEL_ERROR" in [s["status"] for s in cycle["channel_statuses"]]

    # The local cache runs in the WebView stand-in: jeep-sqlite (sql.js WASM), synced once
    # through the shaped link, judged in the 4G column (local queries: far below target).
    for check_id, limit in [("local_cache_query_50", 50), ("local_cache_search", 200),
                            ("local_cache_conversations", 100)]:  # fmt: skip
        cache = checks[check_id]
        assert cache.status == "pass", cache
        assert cache.target is not None and cache.target.value == limit
        assert cache.target.column == "4g" and len(cache.samples) == 20
        assert cache.evidence["cache"]["search"] == "like"  # sql.js has no FTS5
        assert cache.evidence["cache"]["messages"] > 50
    assert checks["local_cache_query_50"].evidence["rows"] == 50
    assert checks["local_cache_conversations"].evidence["ordered"] is True
    assert any(checks["local_cache_search"].evidence["hits"].values())
    reasons = {c.id: c.reason for c in results.checks if c.status == "skip"}
    assert not {"local_cache_query_50", "local_cache_search"} & set(reasons), reasons
    assert "real drain needs the power cut" in reasons["battery_drain"]  # power: none
    # The memory check reads the WebView's JS heap through Appium's DevTools passthrough
    # (the stand-in's, for real). The stand-in is no process of the fake phone: the app's
    # PSS beside it cannot be read, which the evidence says; the background samples of
    # the app are gaps.
    memory = checks["memory_100_conversations"]
    assert memory.status in ("pass", "fail"), memory
    assert memory.evidence["heap_before_mb"] > 0 and "Appium" in memory.evidence["how"]
    assert memory.evidence["pss_before_mb"] is None
    assert "no process found for app.messaging.test" in memory.evidence["side_notes"]["pss"]
    assert any("dumpsys meminfo app.messaging.test" in s for s in phone.services)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    gaps = [s for s in samples if s["metric"] == "memory.pss_mb" and s["value"] is None]
    assert gaps and gaps[0]["note"] == "no process found for app.messaging.test", samples[:5]
    series = {s.name for s in results.series}
    assert {"battery.level_pct", "battery.voltage_mv", "battery.current_ma"} <= series, series
    assert "memory.pss_mb" not in series  # gaps stay out of the series
    assert not phone.battery_unplugged  # the run reads the battery, it never unplugs it

    # The route was really applied to the phone during the run...
    reverse = [s for s in phone.services if s.startswith("reverse:forward:tcp:")]
    assert reverse, phone.services
    port = reverse[0].split(";")[-1].removeprefix("tcp:")
    assert any(f"settings put global http_proxy 127.0.0.1:{port}" in s for s in phone.services)
    assert any("settings put global stay_on_while_plugged_in 7" in s for s in phone.services)
    # ...and undone after, with nothing pending in the journal.
    _route_is_undone(phone)
    assert Journal(Path(lab_env["DEVICELAB_STATE"]) / "journal.jsonl").pending() == []

    text = (out / "results.json").read_text()
    assert "eyJ" not in text, "a JWT leaked into results.json"
    assert "password123" not in text + done.stdout + done.stderr
    assert json.loads(text)["schema"] == "devicelab.results/1"


def test_a_session_that_cannot_start_exits_3_with_one_line_and_restores_the_phone(
    lab_env: dict[str, str], phone: FakeAdbd, inventory: Path, tmp_path: Path
) -> None:
    done = devicelab(
        "run", "--device", "phone-no-session", "--network", "none", "--out", str(tmp_path),
        "--inventory", str(inventory), "--scenario", "message_delivery", env=lab_env,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(error) == 1, done.stderr
    assert "the Appium session did not start" in error[0] and "'app' is required" in error[0]
    _route_is_undone(phone)


def test_an_absent_phone_exits_3_before_the_backend_starts(
    lab_env: dict[str, str], inventory: Path, tmp_path: Path
) -> None:
    done = devicelab(
        "run", "--device", "phone-absent", "--network", "4g", "--out", str(tmp_path),
        "--inventory", str(inventory), "--scenario", "message_delivery", env=lab_env,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert (
        "error: android device phone-absent (R5CT-NOT-ATTACHED) is absent (hint: not attached: "
        "check the cable, or `adb connect HOST:PORT`)" in done.stderr
    )
    assert "starting the backend" not in done.stderr and "Traceback" not in done.stderr


def test_a_missing_webview_exits_3_with_the_debugging_hint_from_a_local_appium(
    lab_env: dict[str, str], phone: FakeAdbd, inventory: Path, tmp_path: Path
) -> None:
    done = devicelab(
        "run", "--device", "phone-native-only", "--network", "none", "--out", str(tmp_path),
        "--inventory", str(inventory), "--scenario", "message_delivery", env=lab_env,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "no WEBVIEW_app.messaging.test context appeared within 1.5 s" in done.stderr
    assert "android.webContentsDebuggingEnabled" in done.stderr
    assert "Traceback" not in done.stderr
    _route_is_undone(phone)
    # The lab started Appium itself (nothing answered at the inventory's URL) and stopped it.
    assert "no Appium server answers at http://127.0.0.1:" in done.stderr, done.stderr
    assert "Appium REST http interface listener started" in (tmp_path / "appium.log").read_text()
    url = yaml.safe_load(inventory.read_text())["devices"]["phone-native-only"]["appium"]["url"]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", int(url.rsplit(":")[-1]))):
        pass


def test_bad_input_exits_2_before_anything_starts(lab_env: dict[str, str], inventory: Path) -> None:
    for device, wanted in [
        ("phone-bad-caps", "devices.phone-bad-caps.appium.capabilities.automationName is not "
                           "a W3C capability (hint: write it with Appium's vendor prefix: "
                           "appium:automationName)"),
        ("phone-no-appium", "devices.phone-no-appium.appium is missing"),
        ("phnoe", "did you mean 'phone'"),
    ]:  # fmt: skip
        done = devicelab("run", "--device", device, "--network", "4g",
                         "--inventory", str(inventory), env=lab_env)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert wanted in done.stderr
        assert "starting the backend" not in done.stderr and "Traceback" not in done.stderr


def test_the_phone_is_judged_in_its_own_column_unshaped_and_the_network_column_shaped(
    inventory: Path,
) -> None:
    assert Lab("phone", "none", inventory=inventory).column == "wifi"
    assert Lab("phone", "4g", inventory=inventory).column == "4g"
    assert Lab("phone", "fast-3g", inventory=inventory).column == "3g"


def test_a_crashed_run_is_undone_when_the_next_one_attaches(
    lab_env: dict[str, str], phone: FakeAdbd, inventory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash = (
        "import os, sys; from pathlib import Path; from devicelab import config; "
        "from devicelab.journal import Journal; "
        "from devicelab.platforms.android_device import AndroidDevice; "
        "device = config.device('phone', config.load_inventory(Path(sys.argv[1]))); "
        "AndroidDevice(device, Journal()).create().route(18080); os._exit(9)"
    )
    done = subprocess.run([sys.executable, "-c", crash, str(inventory)], env=lab_env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 9, done.stderr
    assert phone.reverses == {"tcp:18080": "tcp:18080"}
    assert phone.settings["global"]["http_proxy"] == "127.0.0.1:18080"
    assert phone.settings["global"]["stay_on_while_plugged_in"] == "7"

    for key in ("DEVICELAB_STATE", "ANDROID_ADB_SERVER_PORT", "HOME", "ADBUTILS_ADB_PATH"):
        monkeypatch.setenv(key, lab_env[key])
    from devicelab import config
    from devicelab.platforms.android_device import AndroidDevice

    device = config.device("phone", config.load_inventory(inventory))
    journal = Journal()
    attached = AndroidDevice(device, journal).create()  # recovers before anything else
    _route_is_undone(phone)
    assert journal.pending() == []
    assert attached.info().os == "Android 13 (API 33)"
    attached.close()  # lets the phone go (attached, it is claimed)


#: What the fake phone's app gains on every ``dumpsys meminfo`` read: 60 MB (in KiB).
PSS_STEP_KB = 58_594


@pytest.mark.slow
def test_the_memory_checks_on_android_judge_the_webview_heap_with_the_apps_pss_beside(
    lab_env: dict[str, str], phone: FakeAdbd, inventory: Path, tmp_path: Path
) -> None:
    """The checks judge the WebView's JS heap increase (the stand-in's, through Appium's
    DevTools passthrough), and read the app's TOTAL PSS beside it through the real adb
    server: the fake phone's grows by 60 MB on every read, and the check holds the
    background sampler off between its two reads, so the PSS increase in the evidence is
    exactly one step. memory_leak runs on the same heap reader."""
    package = "app.messaging.test"
    reads = itertools.count()

    def meminfo(_command: str) -> ShellResult:
        pid = 10000 + sorted(phone.packages).index(package)
        kb = 80929 + next(reads) * PSS_STEP_KB
        text = MEMINFO.format(pid=pid, package=package)
        return ShellResult(text.replace("TOTAL PSS:    80929", f"TOTAL PSS: {kb:>8}"))

    phone.packages.add(package)
    phone.on(f"dumpsys meminfo {package}", meminfo)
    out = tmp_path / "out"
    try:
        done = devicelab(
            "run", "--device", "phone", "--network", "none", "--out", str(out),
            "--inventory", str(inventory), "--scenario", "memory_100_conversations",
            "--scenario", "memory_1000_messages", "--scenario", "memory_leak",
            env={**lab_env, "DEVICELAB_LEAK_DURATION_S": "10", "DEVICELAB_LEAK_SAMPLE_S": "2"},
        )  # fmt: skip
    finally:
        phone.off(f"dumpsys meminfo {package}")
        phone.packages.discard(package)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "Traceback" not in done.stderr

    results = load_results(out / "results.json")
    checks = {c.id: c for c in results.checks}
    step_mb = round(PSS_STEP_KB * 1024 / 1e6, 3)
    for check_id, limit in [("memory_100_conversations", 50), ("memory_1000_messages", 100)]:
        check = checks[check_id]
        assert check.status in ("pass", "fail"), check
        evidence = check.evidence
        # The judged value is the heap's increase, not the PSS's 60 MB step.
        heap_step = round(max(0.0, evidence["heap_after_mb"] - evidence["heap_before_mb"]), 3)
        assert check.value == heap_step and check.unit == "MB"
        assert evidence["heap_before_mb"] > 0
        assert check.target is not None and check.target.value == limit
        assert check.target.column == "wifi"
        assert round(evidence["pss_after_mb"] - evidence["pss_before_mb"], 3) == step_mb
        assert "JSHeapUsedSize" in evidence["how"] and evidence["loaded"] > 0

    leak = checks["memory_leak"]
    assert leak.status in ("pass", "fail"), leak
    assert leak.evidence["readings"] >= 3 and leak.evidence["series"] == "memory.js_heap_mb"

    # Every read (the background ones and the checks') is a sample, and a series.
    series = {s.name: s for s in results.series}
    wanted = {"memory.pss_mb", "memory.rss_mb", "memory.js_heap_mb", "battery.level_pct"}
    assert wanted <= set(series), set(series)
    pss = series["memory.pss_mb"].v
    assert len(pss) >= 5 and pss == sorted(pss), pss  # 2 checks x 2 reads + the others'
    assert not phone.battery_unplugged
    _route_is_undone(phone)
    assert Journal(Path(lab_env["DEVICELAB_STATE"]) / "journal.jsonl").pending() == []


def test_a_battery_simulation_a_crashed_run_left_is_reset_when_the_lab_attaches(
    lab_env: dict[str, str], phone: FakeAdbd, inventory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash = (
        "import os, sys; from pathlib import Path; from devicelab import config; "
        "from devicelab.journal import Journal; "
        "from devicelab.samplers.android import AndroidSampler, BatteryUnplugged; "
        "from devicelab.samplers.log import SampleLog; "
        "from devicelab.platforms.android import AdbServer; "
        "device = config.device('phone', config.load_inventory(Path(sys.argv[1]))); "
        "adb = AdbServer().device(device.serial); "
        "sampler = AndroidSampler(SampleLog(Path(sys.argv[2])), adb, 'app.messaging.test'); "
        "BatteryUnplugged(sampler, Journal()).__enter__(); os._exit(9)"
    )
    log = Path(lab_env["DEVICELAB_STATE"]) / "crash-samples.jsonl"
    done = subprocess.run([sys.executable, "-c", crash, str(inventory), str(log)], env=lab_env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 9, done.stderr
    assert phone.battery_unplugged

    for key in ("DEVICELAB_STATE", "ANDROID_ADB_SERVER_PORT", "HOME", "ADBUTILS_ADB_PATH"):
        monkeypatch.setenv(key, lab_env[key])
    lab = Lab("phone", "none", inventory=inventory)
    lab_phone.attach(lab.device, lab.say).close()  # recovers the journal first
    assert not phone.battery_unplugged
    assert Journal(Path(lab_env["DEVICELAB_STATE"]) / "journal.jsonl").pending() == []


def test_app_pss_holds_the_sampler_off_and_refuses_a_restarted_or_absent_app(
    lab_env: dict[str, str], phone: FakeAdbd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devicelab.errors import ProbeFailed
    from devicelab.platforms.android import AdbServer
    from devicelab.samplers import SampleLog
    from devicelab.samplers.android import AndroidSampler, AppPss

    for key in ("ANDROID_ADB_SERVER_PORT", "HOME", "ADBUTILS_ADB_PATH"):
        monkeypatch.setenv(key, lab_env[key])
    package, pids = "app.messaging.test", itertools.count(4242)
    phone.on(f"dumpsys meminfo {package}",
             lambda _c: MEMINFO.format(pid=next(pids), package=package))  # fmt: skip
    log = SampleLog(tmp_path / "samples.jsonl")
    sampler = AndroidSampler(log, AdbServer().device(phone.serial), package, battery=False)
    pss = AppPss(sampler)
    try:
        assert pss() == pss() == round(80929 * 1024 / 1e6, 3)  # a new pid each: not held
        sampler.start(period_s=0.05)
        with pss:
            taken = len(sampler.taken)
            pss()
            time.sleep(0.3)
            assert len(sampler.taken) == taken, "the sampler read while the check held it"
            with pytest.raises(ProbeFailed, match="restarted between two memory reads"):
                pss()  # the fake's pid is new on every read
        deadline = time.monotonic() + 5
        while len(sampler.taken) == taken:  # released: the background readings go on
            assert time.monotonic() < deadline, "the sampler never read again"
            time.sleep(0.05)
    finally:
        sampler.stop()
        phone.off(f"dumpsys meminfo {package}")
    with pytest.raises(ProbeFailed, match=f"no process found for {package}"):
        pss()
    assert {s.metric for s in log.read() if s.source == "dumpsys meminfo"} >= {"memory.pss_mb"}


def test_a_phone_that_cannot_be_put_back_exits_3_naming_what_is_left(
    lab_env: dict[str, str], phone: FakeAdbd, inventory: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The restore fails (the phone's settings service broke, as when it goes offline):
    the checks still pass, but the run exits 3 with one line saying what the phone was
    left with, after the summary and with the reports written; the next start puts it
    back."""
    broken = ShellResult("", "cmd: Failure calling service settings: Broken pipe (32)\n", 255)
    restores = ("settings put global http_proxy :0", "settings delete global stay_on")
    for prefix in restores:
        phone.on(prefix, lambda _command: broken)
    out = tmp_path / "out"
    try:
        done = devicelab(
            "run", "--device", "phone", "--network", "none", "--out", str(out),
            "--inventory", str(inventory), "--scenario", "message_search", env=lab_env,
        )  # fmt: skip
    finally:
        for prefix in restores:
            phone.off(prefix)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [error] = [line for line in done.stderr.splitlines() if "error:" in line]
    assert "adb reverse" not in error  # that one was undone
    assert f"error: {phone.serial} was left changed: http_proxy 127.0.0.1:" in error, error
    assert "stay_on_while_plugged_in 7 (was unset)" in error
    assert "the next devicelab run on it puts that back" in error
    assert "results:" in done.stdout and "message_search" in done.stdout
    assert (out / "results.json").is_file() and (out / "report.md").is_file()
    assert load_results(out / "results.json").run.finished_at is not None

    for key in ("DEVICELAB_STATE", "ANDROID_ADB_SERVER_PORT", "HOME", "ADBUTILS_ADB_PATH"):
        monkeypatch.setenv(key, lab_env[key])
    lab = Lab("phone", "none", inventory=inventory)
    lab_phone.attach(lab.device, lab.say).close()  # the next start puts the phone back
    _route_is_undone(phone)
    assert Journal(Path(lab_env["DEVICELAB_STATE"]) / "journal.jsonl").pending() == []


def test_appium_is_checked_and_the_phone_claimed_before_anything_starts(
    lab_env: dict[str, str], phone: FakeAdbd, inventory: Path, tmp_path: Path
) -> None:
    """Something that is not Appium at the URL, no Appium at a remote URL, a phone another
    run holds: each exits 3 before the backend starts, and the phone is never routed."""
    import http.server
    import threading

    class NotAppium(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotAppium)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    devices = yaml.safe_load(inventory.read_text())["devices"]
    caps = devices["phone"]["appium"]["capabilities"]
    devices["phone-not-appium"] = {
        **devices["phone"],
        "appium": {"url": f"http://127.0.0.1:{web.server_address[1]}", "capabilities": caps},
    }
    closed = f"http://127.0.0.2:{free_port()}"  # not loopback to devicelab: never started
    devices["phone-remote-appium"] = {
        **devices["phone"], "appium": {"url": closed, "capabilities": caps}
    }  # fmt: skip
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    state = Path(lab_env["DEVICELAB_STATE"])

    def run(device: str) -> subprocess.CompletedProcess[str]:
        return devicelab(
            "run", "--device", device, "--network", "none", "--out", str(tmp_path / device),
            "--inventory", str(path), "--scenario", "message_delivery", env=lab_env,
        )  # fmt: skip

    before = len(phone.services)
    try:
        not_appium, remote = run("phone-not-appium"), run("phone-remote-appium")
        held = Journal(state / "journal.jsonl").claim(phone.serial, "in use")
        try:
            second = run("phone")
        finally:
            held.release()
    finally:
        web.shutdown()
        web.server_close()
    for done, wanted in [
        (not_appium, "something that is not an Appium server answers at http://127.0.0.1:"),
        (remote, f"no Appium server answers at {closed}"),
        (second, f"{phone.serial} is already in use by another devicelab run"),
    ]:
        assert done.returncode == 3, done.stderr
        assert wanted in done.stderr, done.stderr
        assert "starting the backend" not in done.stderr and "Traceback" not in done.stderr
    changed = [s for s in phone.services[before:] if "reverse:forward" in s or " put " in s]
    assert changed == [], changed
    assert phone.reverses == {}
