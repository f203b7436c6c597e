"""`devicelab battery` and signals: the farm's own (a second Ctrl-C, SIGHUP) and its runs'
(one run stopped or killed from outside), and a farm that could measure nothing. Fake
phones (devicelab.testing.fake_adbd) behind the real adb server on a private port, each
run through a real Appium 3 (the chromium driver standing in for the WebView), as in
test_run_farm.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from devicelab.platforms.appium import AppiumServer
from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import DrainingBattery, FakeAdbd
from tests.run.conftest import farm_phone


@pytest.fixture(scope="module")
def phones(adb: PrivateAdbServer) -> Iterator[dict[str, FakeAdbd]]:
    """Three phones on battery; "killed" is only for the run that is SIGKILLed (its route
    stays until a next run: the other tests must not see it)."""
    with adb.phone() as one, adb.phone() as two, adb.phone() as killed:
        for phone in (one, two, killed):
            phone.on("dumpsys battery", DrainingBattery(pct_per_hour=4.0))
        yield {"phone-one": one, "phone-two": two, "phone-killed": killed}


@pytest.fixture(scope="module")
def inventory(adb: PrivateAdbServer, phones: dict[str, FakeAdbd], appium: AppiumServer) -> Path:
    """The farm's phones, each run through Appium and the WebView stand-in
    (skipped, with the reason, when the stand-in cannot run here), and two that cannot be
    measured."""
    devices: dict[str, Any] = {
        name: farm_phone(appium.url, phone.serial) for name, phone in phones.items()
    }
    # Refused before its serial is looked at: not attached, and a serial of its own (an
    # inventory lists each phone once).
    devices["phone-no-power"] = {**farm_phone(appium.url, "127.0.0.1:9"), "power": {"kind": "none"}}
    devices["iphone-no-power"] = {
        "platform": "ios", "model": "iPhone 11", "os": "iOS 17.5", "udid": "00008030-FAKE",
    }  # fmt: skip
    path = Path(adb.env["DEVICELAB_STATE"]) / "inventory.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    return path


def _default_stops() -> None:
    # A suite started in the background or under nohup ignores SIGINT or SIGHUP, and so
    # would the farm (Python keeps an inherited SIG_IGN): give it the defaults back.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _farm(inventory: Path, out: Path, env: dict[str, str], *devices: str) -> subprocess.Popen[str]:
    """`devicelab battery` on ``devices`` for 10 minutes, started; returns once every run
    reached its drain."""
    argv = [sys.executable, "-m", "devicelab", "battery", "--inventory", str(inventory),
            "--duration", "10m", "--out", str(out)]  # fmt: skip
    for device in devices:
        argv += ["--device", device]
    farm = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_default_stops,  # noqa: PLW1509 (no locks)
        start_new_session=True,
    )  # fmt: skip
    logs = [out / device / "run.log" for device in devices]
    deadline = time.monotonic() + 240
    while not all(p.exists() and "running battery_drain" in p.read_text() for p in logs):
        if farm.poll() is not None:
            pytest.fail(f"the farm ended early: {farm.communicate()}")
        if time.monotonic() > deadline:
            farm.kill()
            pytest.fail("the runs never reached battery_drain")
        time.sleep(0.3)
    return farm


def _run_of(farm: subprocess.Popen[str], device: str) -> psutil.Process:
    """The farm's `devicelab run` process of ``device``."""
    for child in psutil.Process(farm.pid).children():
        argv = child.cmdline()
        if "run" in argv and argv[argv.index("--device") + 1] == device:
            return child
    raise LookupError(device)


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in json.loads((out / "farm.json").read_text())["devices"]}


def test_a_farm_that_can_measure_nothing_is_refused_before_anything_starts(
    adb: PrivateAdbServer, inventory: Path
) -> None:
    for devices in (["phone-no-power"], ["iphone-no-power"], ["phone-no-power", "iphone-no-power"]):
        args = [arg for device in devices for arg in ("--device", device)]
        result = subprocess.run(
            [sys.executable, "-m", "devicelab", "battery", "--inventory", str(inventory), *args],
            capture_output=True, text=True, env=adb.env, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 2, (devices, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"{', '.join(devices)}: power is none in the inventory" in lines[0]
        assert "hint: set power: {kind: uhubctl, hub, port} or {kind: manual}" in lines[0]
        assert "preparing the backend" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("first", "code", "said"),
    [(signal.SIGINT, 130, "devicelab: interrupted"), (signal.SIGHUP, 129, "devicelab: hung up")],
    ids=["ctrl-c-twice", "sighup"],
)
def test_later_signals_do_not_cut_the_farms_wait_for_its_runs(
    adb: PrivateAdbServer,
    phones: dict[str, FakeAdbd],
    inventory: Path,
    tmp_path: Path,
    first: signal.Signals,
    code: int,
    said: str,
) -> None:
    """A second Ctrl-C (and a SIGTERM, a SIGHUP) while the runs restore their phones: the
    farm still waits for them and writes farm.json; a SIGHUP (terminal closed, ssh
    dropped) stops the farm as SIGTERM does, with 129."""
    out = tmp_path / "farm"
    farm = _farm(inventory, out, adb.env, "phone-one", "phone-two")
    try:
        farm.send_signal(first)
        time.sleep(0.5)  # the runs are restoring their phones now
        for later in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            farm.send_signal(later)
            time.sleep(0.05)
        _stdout, stderr = farm.communicate(timeout=120)
    finally:
        if farm.poll() is None:
            farm.kill()
    # The farm ended after its runs: each phone is restored the moment it exits.
    for name in ("phone-one", "phone-two"):
        assert phones[name].reverses == {}, f"{name}: adb reverse left behind"
        assert phones[name].settings["global"].get("http_proxy") == ":0", "http_proxy left set"
    assert farm.returncode == code, stderr
    assert any(line.startswith(said) for line in stderr.splitlines()), stderr
    assert "the farm writes farm.json once they are done" in stderr
    rows = _rows(out)
    assert [(r, rows[r]["status"]) for r in rows] == [
        ("phone-one", "error"),
        ("phone-two", "error"),
    ]
    assert all("interrupted before its check ended" in r["reason"] for r in rows.values())
    for name in ("phone-one", "phone-two"):
        # The run's last line (read by the farm to the end) is in its run.log.
        assert "devicelab: interrupted" in (out / name / "run.log").read_text()


@pytest.mark.slow
def test_a_run_stopped_or_killed_from_outside_is_that_runs_failure_not_the_farms(
    adb: PrivateAdbServer,
    phones: dict[str, FakeAdbd],
    inventory: Path,
    tmp_path: Path,
) -> None:
    """One run gets a Ctrl-C of its own, another is SIGKILLed (the OOM killer, a stray
    kill -9): the farm was not interrupted, so it exits 3 (not 130), each row an error
    naming the signal, the killed one saying its phone may be left changed."""
    out = tmp_path / "farm"
    farm = _farm(inventory, out, adb.env, "phone-one", "phone-killed")
    try:
        _run_of(farm, "phone-one").send_signal(signal.SIGINT)
        _run_of(farm, "phone-killed").kill()
        _stdout, stderr = farm.communicate(timeout=120)
    finally:
        if farm.poll() is None:
            farm.kill()
    assert farm.returncode == 3, stderr
    # The farm's own line (the runs' lines are "devicelab: [phone-one] ...").
    assert "devicelab: interrupted" not in stderr.splitlines(), stderr
    rows = _rows(out)
    one, killed = rows["phone-one"], rows["phone-killed"]
    assert (one["status"], one["exit_code"]) == ("error", 3), one
    assert "stopped by SIGINT, not sent by the farm" in one["reason"], one
    assert (killed["status"], killed["exit_code"]) == ("error", 3), killed
    assert "killed by SIGKILL" in killed["reason"], killed
    assert "the phone may be left changed until its next run" in killed["reason"], killed
    assert "`devicelab devices`" in killed["reason"], killed
    assert "exited -9" not in (out / "farm.md").read_text()
    assert phones["phone-one"].reverses == {}, "adb reverse left behind"
