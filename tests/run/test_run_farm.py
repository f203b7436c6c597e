"""`devicelab battery`: battery_drain on a farm of phones at once, end to end. Two fake
phones (devicelab.testing.fake_adbd) behind the real adb server on a private port, whose
batteries fall at different rates, each driven by its own `devicelab run` through a real
Appium 3 (the chromium driver standing in for the WebView) and a shaped proxy of its own,
plus one phone that is not attached; the backend is a managed cluster of the test's own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devicelab.platforms.appium import AppiumServer
from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import DrainingBattery, FakeAdbd
from tests.run.conftest import farm_phone


def devicelab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicelab", *args],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def phones(adb: PrivateAdbServer) -> Iterator[tuple[FakeAdbd, FakeAdbd]]:
    """Two phones on battery: one drains 4 %/h (passes < 10 %/h), one 360 %/h (fails)."""
    with adb.phone() as slow, adb.phone() as fast:
        slow.on("dumpsys battery", DrainingBattery(pct_per_hour=4.0))
        fast.on("dumpsys battery", DrainingBattery(pct_per_hour=360.0))
        yield slow, fast


@pytest.fixture(scope="module")
def inventory(
    adb: PrivateAdbServer, phones: tuple[FakeAdbd, FakeAdbd], appium: AppiumServer
) -> Path:
    """The farm's phones, each run through Appium and the WebView stand-in
    (skipped, with the reason, when the stand-in cannot run here)."""
    state = Path(adb.env["DEVICELAB_STATE"])

    slow, fast = phones
    devices = {
        "phone-slow": farm_phone(appium.url, slow.serial),
        "phone-fast": farm_phone(appium.url, fast.serial),
        "phone-absent": farm_phone(appium.url, "127.0.0.1:9"),
        "phone-no-power": {**farm_phone(appium.url, "127.0.0.1:8"), "power": {"kind": "none"}},
        # The slow phone again (another build, say): never in one farm with phone-slow.
        "phone-slow-again": {**farm_phone(appium.url, slow.serial), "power": {"kind": "none"}},
        "web": {"platform": "web", "model": "Chromium", "os": "Debian 12"},
    }
    path = state / "inventory.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    return path


@pytest.mark.slow
def test_the_farm_drains_every_phone_at_once_and_sums_it_up(
    adb: PrivateAdbServer,
    phones: tuple[FakeAdbd, FakeAdbd],
    inventory: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "farm"
    env = {**adb.env, "DEVICELAB_BATTERY_SAMPLE_S": "2"}
    start = time.monotonic()
    result = devicelab(
        "battery", "--inventory", str(inventory), "--duration", "20s", "--network", "4g",
        "--out", str(out), env=env,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    # The absent phone is an environment problem: the farm's exit code is the worst.
    # A drain that failed wins over the phone that could not be measured, as in one run.
    assert result.returncode == 1, output
    farm = json.loads((out / "farm.json").read_text())
    assert farm["schema"] == "devicelab.farm/1"
    rows = {row["id"]: row for row in farm["devices"]}
    # Without --device: every phone whose power can be cut (not phone-no-power, not web).
    assert list(rows) == ["phone-slow", "phone-fast", "phone-absent"]
    assert rows["phone-slow"]["status"] == "pass", rows["phone-slow"]
    assert 0 <= rows["phone-slow"]["value"] < 10
    assert rows["phone-fast"]["status"] == "fail", rows["phone-fast"]
    assert rows["phone-fast"]["value"] > 100
    assert (rows["phone-slow"]["exit_code"], rows["phone-fast"]["exit_code"]) == (0, 1)
    absent = rows["phone-absent"]
    assert (absent["status"], absent["exit_code"]) == ("error", 3)
    assert "phone-absent (127.0.0.1:9) is absent" in absent["reason"]
    # At once, not one after the other: two 20 s drains (plus start-up) in one window.
    assert elapsed < 20 * 2 + 60, elapsed
    for device in ("phone-slow", "phone-fast"):
        assert json.loads((out / device / "results.json").read_text())["run"]["kind"] == "battery"
        assert "running battery_drain" in (out / device / "run.log").read_text()
    assert "| `phone-fast` |" in (out / "farm.md").read_text()
    assert "[phone-slow]" in result.stderr
    # Each run restored its phone.
    for phone in phones:
        assert phone.reverses == {}, "adb reverse left behind"
        assert phone.settings["global"].get("http_proxy") == ":0", "http_proxy left set"


def test_bad_farms_are_refused_before_anything_starts(
    adb: PrivateAdbServer, inventory: Path
) -> None:
    slow_serial = yaml.safe_load(inventory.read_text())["devices"]["phone-slow"]["serial"]
    for args, expected in [
        (["--device", "web"], "web is a web device: battery drain is N/A on web"),
        (["--device", "nope"], "unknown device 'nope'"),
        (["--duration", "soon"], "bad duration 'soon'"),
        (["--network", "offline"], "network offline is offline"),
        (["--device", "phone-slow", "--device", "phone-slow"], "phone-slow is given twice"),
        (
            ["--device", "phone-slow", "--device", "phone-slow-again"],
            f"phone-slow and phone-slow-again are one phone (serial '{slow_serial}')",
        ),
    ]:
        result = devicelab("battery", "--inventory", str(inventory), *args, env=adb.env)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert "preparing the backend" not in result.stderr


def test_phones_whose_proxies_would_share_an_address_are_refused_before_anything_starts(
    adb: PrivateAdbServer, tmp_path: Path
) -> None:
    # Two iPhones set to one Wi-Fi proxy address: the second run's proxy could not listen,
    # after its backend and Appium had started, and its drain was lost (exit 3).
    def iphone(udid: str, listen: str) -> dict[str, object]:
        return {
            "platform": "ios", "model": "iPhone 11", "os": "iOS 17", "udid": udid,
            "appium": {"url": "http://127.0.0.1:9", "capabilities": {"platformName": "iOS"}},
            "proxy": {"listen": listen, "allow": ["192.168.50.0/24"]},
            "power": {"kind": "manual"},
        }  # fmt: skip

    devices = {
        "a": iphone("00008030-000A", "192.168.50.10:8899"),
        "b": iphone("00008030-000B", "0.0.0.0:8899"),  # every address: this one as well
        "c": iphone("00008030-000C", "192.168.50.10:8900"),
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    result = devicelab("battery", "--inventory", str(path), "--out", str(tmp_path / "farm"),
                       env=adb.env)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "a and b both have their shaped proxy listen on 0.0.0.0:8899" in result.stderr
    assert "devices.b.proxy.listen" in result.stderr
    assert "preparing the backend" not in result.stderr
    assert not (tmp_path / "farm").exists()  # nothing written


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [("ctrl-c", 130, "interrupted"), ("sigterm", 143, "terminated")],
)
def test_ctrl_c_reaches_every_run_and_each_restores_its_phone(
    adb: PrivateAdbServer,
    phones: tuple[FakeAdbd, FakeAdbd],
    inventory: Path,
    tmp_path: Path,
    stop: str,
    code: int,
    said: str,
) -> None:
    out = tmp_path / "farm"
    farm = subprocess.Popen(
        [sys.executable, "-m", "devicelab", "battery", "--inventory", str(inventory),
         "--device", "phone-slow", "--device", "phone-fast", "--duration", "10m",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=adb.env,
        # A suite started in the background (`dev/test &`) ignores SIGINT, and so would
        # the farm (Python keeps an inherited SIG_IGN): give it the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 (no locks)
        start_new_session=True,  # a group of its own, as a terminal's job is
    )  # fmt: skip
    try:
        logs = [out / device / "run.log" for device in ("phone-slow", "phone-fast")]
        deadline = time.monotonic() + 240
        while not all(p.exists() and "running battery_drain" in p.read_text() for p in logs):
            assert farm.poll() is None, farm.communicate()
            assert time.monotonic() < deadline, "the runs never reached battery_drain"
            time.sleep(0.5)
        assert all(phone.reverses for phone in phones), "the phones were not routed"
        # As a terminal's Ctrl-C: to the whole process group (each run got it twice, from
        # the terminal and from the farm, and a second one can cut a restore short).
        # A cancelled CI job's SIGTERM goes to the farm: 143, not the runs' 130.
        if stop == "ctrl-c":
            os.killpg(farm.pid, signal.SIGINT)
        else:
            farm.send_signal(signal.SIGTERM)
        stdout, stderr = farm.communicate(timeout=120)
    finally:
        if farm.poll() is None:
            farm.kill()
    assert farm.returncode == code, stderr
    assert f"devicelab: {said}" in stderr
    # The table and the farm.json line, as at the end of a farm that finished (they were
    # left out: farm.json was written, but nothing said where).
    assert "| `phone-slow` |" in stdout and "| `phone-fast` |" in stdout, stdout
    assert stdout.rstrip().endswith(f"farm: {out / 'farm.json'}"), stdout
    # Where every phone got to is written, as at the end of a farm that finished.
    rows = json.loads((out / "farm.json").read_text())["devices"]
    assert [(r["id"], r["status"]) for r in rows] == [
        ("phone-slow", "error"),
        ("phone-fast", "error"),
    ]
    assert all("interrupted before its check ended" in r["reason"] for r in rows), rows
    for phone in phones:
        assert phone.reverses == {}, "adb reverse left behind"
        assert phone.settings["global"].get("http_proxy") == ":0", "http_proxy left set"


@pytest.mark.slow
def test_sigterm_stops_a_run_like_ctrl_c_and_it_restores_its_phone(
    adb: PrivateAdbServer,
    phones: tuple[FakeAdbd, FakeAdbd],
    inventory: Path,
    tmp_path: Path,
) -> None:
    """A cancelled CI job sends SIGTERM: the run restores the phone at once, as for Ctrl-C
    (not only at the next start, from the journal)."""
    slow, _fast = phones
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("the previous run's report")
    env = {**adb.env, "DEVICELAB_BATTERY_DURATION_S": "600"}
    run = subprocess.Popen(
        [sys.executable, "-m", "devicelab", "run", "--inventory", str(inventory),
         "--device", "phone-slow", "--network", "wifi", "--scenario", "battery_drain",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert run.stderr is not None
        deadline = time.monotonic() + 240
        seen = ""
        while "running battery_drain" not in seen:
            assert time.monotonic() < deadline, seen
            line = run.stderr.readline()
            assert line, (seen, run.communicate())
            seen += line
        assert slow.reverses, "the phone was not routed"
        run.send_signal(signal.SIGTERM)
        _stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 143, seen + stderr
    assert "devicelab: terminated" in stderr
    # One run's files: its results.json (not finished) and its reports, not the previous
    # run's reports beside this run's results.json.
    from devicelab.report import load_results
    from devicelab.report._common import UNFINISHED

    assert load_results(out / "results.json").run.finished_at is None
    assert UNFINISHED in (out / "report.md").read_text()
    assert (out / "junit.xml").exists() and (out / "report.html").exists()
    assert slow.reverses == {}, "adb reverse left behind"
    assert slow.settings["global"].get("http_proxy") == ":0", "http_proxy left set"
