"""battery_drain on android: the fake phone behind a private real adb server (never 5037),
its battery read through the run's AndroidSampler, the workload through a harness whose
channel stands in for the app's WebView (it answers every probe and records which ran).

The fake's ``dumpsys battery`` falls over time (DrainingBattery, power ``manual``): the
drain is measured in %/hour and judged against targets.yaml; a fake that still charges
gives an ``error`` with the reason; ``power: none`` skips. ``uhubctl`` runs a stand-in
program on PATH (journaled off, then on; a crash is undone at the next start).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devicelab.config import load_targets
from devicelab.errors import BadInput, ConfigError, ToolMissing
from devicelab.harness import Harness
from devicelab.journal import Journal
from devicelab.models import PowerControl
from devicelab.samplers import SampleLog
from devicelab.samplers.android import AndroidSampler, AppPss
from devicelab.scenarios import ScenarioContext, ScenarioOptions, battery_drain, plan
from devicelab.scenarios.battery_drain import (
    NEEDS_POWER_CUT,
    POWER_KIND,
    STILL_CHARGING,
    UNDOERS,
    DrainOptions,
)
from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import BATTERY, DrainingBattery, FakeAdbd

PKG = "app.messaging.test"
MANUAL = PowerControl(kind="manual")
SHORT = DrainOptions(duration_s=3, sample_every_s=0.4, pause_s=0.2)


@pytest.fixture
def phone(adb_server: PrivateAdbServer) -> Iterator[FakeAdbd]:
    with adb_server.phone() as fake:
        yield fake


class _Link:
    def go_offline(self, seconds: float | None = None) -> None:
        raise AssertionError("battery_drain never drops the link")

    def go_online(self) -> None:
        raise AssertionError("battery_drain never drops the link")


class _App:
    """The WebView's channel: every probe answers one sample; ``probes`` lists what ran."""

    def __init__(self) -> None:
        self.probes: list[str] = []

    def __call__(self, _source: str, arg: Any) -> Any:
        self.probes.append(arg["args"][0])
        return {"ok": True, "value": {"samples": [12.0], "unit": "ms"}}


@pytest.fixture
def app() -> _App:
    return _App()


@pytest.fixture
def ctx(adb_server: PrivateAdbServer, phone: FakeAdbd, app: _App, tmp_path: Path) -> Any:
    """A ScenarioContext as the lab builds it on android: the app's PSS reader (and so the
    run's sampler) behind ``heap_mb``, judged in the WiFi column."""
    import adbutils

    device = adbutils.AdbClient(host="127.0.0.1", port=adb_server.port).device(phone.serial)
    sampler = AndroidSampler(SampleLog(tmp_path / "samples.jsonl"), device, PKG)
    return ScenarioContext(
        harness=Harness(app), platform="android", column="wifi", book=load_targets(),
        options=ScenarioOptions(), conversation_id="c-ab", big_conversation_id="c-big",
        search_terms=["hello"], link=_Link(), heap_mb=AppPss(sampler),
    )  # fmt: skip


def test_a_falling_level_is_judged_in_percent_per_hour(
    ctx: ScenarioContext, phone: FakeAdbd, app: _App
) -> None:
    battery = DrainingBattery(pct_per_hour=360.0)  # 0.1 % a second: fails < 10 %/h
    phone.on("dumpsys battery", battery)
    check = battery_drain.measure(ctx, MANUAL, SHORT)

    assert check.status == "fail", check
    assert check.value == pytest.approx(360.0, rel=0.15)
    assert check.unit == "pct_per_hour"
    assert check.target is not None and check.target.value == 10 and check.target.column == "wifi"
    assert "a shortened run (3 s" in check.reason
    evidence = check.evidence
    assert evidence["power"] == "manual" and evidence["readings"] >= 6
    assert evidence["level_first_pct"] > evidence["level_last_pct"]
    assert evidence["current_median_ma"] == -512  # the fake's current_now
    assert evidence["cycles"] >= 2
    # The messaging workload went on through the probes.
    assert {"message_delivery", "conversation_list", "message_search"} <= set(app.probes)
    # Every reading is in the run's samples file.
    sampler = ctx.heap_mb.sampler  # type: ignore[union-attr]
    levels = [s for s in sampler.log.read() if s.metric == "battery.level_pct"]
    assert len(levels) == evidence["readings"]


def test_a_slow_drain_passes(ctx: ScenarioContext, phone: FakeAdbd) -> None:
    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=3.6))
    check = battery_drain.measure(ctx, MANUAL, DrainOptions(duration_s=1.5, sample_every_s=0.3))
    assert check.status == "pass", check
    assert check.value is not None and 0 <= check.value < 10


def test_a_phone_that_still_charges_is_an_error_with_the_reason(
    ctx: ScenarioContext, phone: FakeAdbd, app: _App
) -> None:
    # The fake's own battery: USB powered, status 2 (charging): refused at the first reading.
    check = battery_drain.measure(ctx, MANUAL, SHORT)
    assert (check.status, check.reason) == ("error", STILL_CHARGING)
    assert app.probes == []  # no hour of workload on a charging phone

    # Not reported as charging (a full phone on a charger: status 5), but the current flows
    # in: refused at the first reading too (it ran the whole hour, then said "charging").
    phone.on("dumpsys battery", lambda _c: BATTERY.replace("status: 2", "status: 5"))
    phone.current_now = "480000\n"
    check = battery_drain.measure(ctx, MANUAL, DrainOptions(duration_s=1, sample_every_s=0.3))
    assert (check.status, check.reason) == ("error", STILL_CHARGING)
    assert check.evidence["first_reading"] == "current +480 mA into the battery"
    assert app.probes == []


def test_a_level_that_falls_while_current_flows_in_is_no_drain(
    ctx: ScenarioContext, phone: FakeAdbd
) -> None:
    # A charger too weak for the load: the level falls, the current flows in. It passed
    # or failed as a drain (REFERENCE: real drain needs current flowing out).
    import threading

    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=360.0))
    threading.Timer(0.5, lambda: setattr(phone, "current_now", "450000\n")).start()
    check = battery_drain.measure(ctx, MANUAL, SHORT)
    assert (check.status, check.reason) == ("error", STILL_CHARGING)
    assert check.evidence["current_median_ma"] == 450


def test_a_drain_whose_current_cannot_be_read_says_it_is_not_verified(
    ctx: ScenarioContext, phone: FakeAdbd
) -> None:
    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=360.0))
    phone.current_now = None  # Permission denied
    check = battery_drain.measure(ctx, MANUAL, SHORT)
    assert check.status == "fail" and check.evidence["current_median_ma"] is None
    assert "current flows out of the battery (the power really cut) is not verified" in (
        check.reason
    )


def test_no_power_cut_skips_with_the_reason(
    ctx: ScenarioContext, app: _App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICELAB_BATTERY_DURATION_S", "1")
    for power in (None, PowerControl()):
        check = battery_drain.run(ctx, power)
        assert (check.status, check.reason) == ("skip", NEEDS_POWER_CUT)
    assert "real drain needs the power cut" in NEEDS_POWER_CUT
    assert app.probes == []


def test_the_options_come_from_the_environment_and_the_check_is_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert DrainOptions().duration_s == 3600  # the story's hour
    monkeypatch.setenv("DEVICELAB_BATTERY_DURATION_S", "20")
    monkeypatch.setenv("DEVICELAB_BATTERY_SAMPLE_S", "2")
    assert DrainOptions.from_env() == DrainOptions(duration_s=20, sample_every_s=2)
    monkeypatch.setenv("DEVICELAB_BATTERY_DURATION_S", "-1")
    with pytest.raises(ConfigError, match="bad battery run option"):
        DrainOptions.from_env()
    # inf "passed" on two readings, "every inf s" (a single run reads it here).
    monkeypatch.setenv("DEVICELAB_BATTERY_DURATION_S", "20")
    for endless in ("inf", "nan"):
        monkeypatch.setenv("DEVICELAB_BATTERY_SAMPLE_S", endless)
        with pytest.raises(BadInput, match="is not a number of seconds > 0"):
            DrainOptions.from_env()
    (scenario,) = plan(["battery_drain"])
    assert scenario.run is battery_drain.run and scenario.category == "battery"


# --- uhubctl: a stand-in program on PATH that logs its arguments; the fake phone's battery
# follows the port (charging while on, draining once off), as a phone on a switched hub does.
UHUBCTL = """#!/bin/sh
echo "$@" >> "{log}"
"""


@pytest.fixture
def uhubctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The log of the stand-in uhubctl (first on PATH); DEVICELAB_STATE in tmp_path."""
    bin_dir, log = tmp_path / "bin", tmp_path / "uhubctl.log"
    bin_dir.mkdir()
    program = bin_dir / "uhubctl"
    program.write_text(UHUBCTL.format(log=log))
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("DEVICELAB_STATE", str(tmp_path / "state"))
    return log


def _follow_the_port(phone: FakeAdbd, log: Path) -> None:
    draining = DrainingBattery(pct_per_hour=360.0)

    def battery(command: str) -> str:
        calls = log.read_text().splitlines() if log.exists() else []
        off = bool(calls) and calls[-1].endswith("-a off")
        return draining(command) if off else BATTERY

    phone.on("dumpsys battery", battery)


def test_uhubctl_cuts_the_port_journaled_and_switches_it_on_after(
    ctx: ScenarioContext, phone: FakeAdbd, uhubctl: Path, tmp_path: Path
) -> None:
    _follow_the_port(phone, uhubctl)
    hub = PowerControl(kind="uhubctl", hub="1-1.4", port=2)
    journal = Journal(tmp_path / "journal.jsonl", undoers=UNDOERS)
    options = DrainOptions(duration_s=1.5, sample_every_s=0.3, pause_s=0.2, settle_s=0)
    check = battery_drain.measure(ctx, hub, options, journal=journal)
    assert check.status == "fail" and check.evidence["power"] == "uhubctl", check
    assert check.value == pytest.approx(360.0, rel=0.3)
    assert uhubctl.read_text().splitlines() == ["-l 1-1.4 -p 2 -a off", "-l 1-1.4 -p 2 -a on"]
    assert journal.pending() == []
    changes = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert changes[0]["kind"] == POWER_KIND and changes[0]["data"] == {
        "hub": "1-1.4", "port": 2, "what": "hub 1-1.4 port 2 switched off (uhubctl)"
    }  # fmt: skip


def test_a_port_left_off_by_a_crash_is_switched_on_at_the_next_start(
    uhubctl: Path, tmp_path: Path
) -> None:
    crash = (
        "import os, sys; from devicelab.journal import Journal; "
        "from devicelab.models import PowerControl; "
        "from devicelab.scenarios.battery_drain import PowerCut; "
        "power = PowerControl(kind='uhubctl', hub='2-1', port=3); "
        "PowerCut(power, '10.0.0.7:5555', Journal(sys.argv[1])).__enter__(); os._exit(9)"
    )
    path = tmp_path / "journal.jsonl"
    done = subprocess.run([sys.executable, "-c", crash, str(path)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 9, done.stderr
    assert uhubctl.read_text().splitlines() == ["-l 2-1 -p 3 -a off"]
    assert Journal(path, undoers=UNDOERS).recover() == []
    assert uhubctl.read_text().splitlines()[-1] == "-l 2-1 -p 3 -a on"
    assert Journal(path).pending() == []


def test_no_uhubctl_is_tool_missing_and_a_usb_serial_an_error(
    ctx: ScenarioContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = PowerControl(kind="uhubctl", hub="1-1", port=2)
    monkeypatch.setenv("PATH", str(tmp_path))  # no uhubctl there
    journal = Journal(tmp_path / "journal.jsonl", undoers=UNDOERS)
    with pytest.raises(ToolMissing, match="uhubctl is not installed") as caught:
        battery_drain.measure(ctx, hub, SHORT, journal=journal)
    assert "apt-get install uhubctl" in caught.value.hint
    assert journal.pending() == []  # nothing was changed

    sampler = ctx.heap_mb.sampler  # type: ignore[union-attr]
    monkeypatch.setattr(type(sampler), "serial", property(lambda _self: "R5CT1234"))
    check = battery_drain.measure(ctx, hub, SHORT, journal=journal)
    assert check.status == "error" and "adb reaches the phone over USB" in check.reason


_SLOW_ON = """#!/bin/sh
case "$*" in *"-a on"*) touch "{marker}"; sleep 1;; esac
echo "$@" >> "{log}"
"""


def test_a_second_ctrl_c_does_not_stop_the_port_coming_back_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A terminal's Ctrl-C reached a farm's run twice (from the terminal and from the farm):
    # the second one killed `uhubctl ... -a on` and the phone stayed unpowered.
    import signal
    import time

    bin_dir, log, marker = tmp_path / "bin", tmp_path / "uhubctl.log", tmp_path / "on"
    bin_dir.mkdir()
    (bin_dir / "uhubctl").write_text(_SLOW_ON.format(log=log, marker=marker))
    (bin_dir / "uhubctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    first_ctrl_c = (
        "import sys; from devicelab.journal import Journal; "
        "from devicelab.models import PowerControl; "
        "from devicelab.scenarios.battery_drain import PowerCut\n"
        "power = PowerControl(kind='uhubctl', hub='2-1', port=3)\n"
        "with PowerCut(power, '10.0.0.7:5555', Journal(sys.argv[1])):\n"
        "    raise KeyboardInterrupt\n"
    )
    path = tmp_path / "journal.jsonl"
    run = subprocess.Popen(
        [sys.executable, "-c", first_ctrl_c, str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.02)
        os.killpg(run.pid, signal.SIGINT)  # the second one, to the whole process group
        run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert log.read_text().splitlines() == ["-l 2-1 -p 3 -a off", "-l 2-1 -p 3 -a on"]
    assert Journal(path).pending() == []


def test_a_phone_lost_mid_run_keeps_what_was_read_before(
    ctx: ScenarioContext, phone: FakeAdbd, app: _App
) -> None:
    # The check was an error with evidence {}: an hour of readings gone with the phone.
    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=360.0))
    answer = app.__call__

    def vanishing(source: str, arg: Any) -> Any:
        if len(app.probes) >= 9:  # three workload cycles, then the WebView is gone
            return {"ok": False, "error": "the page has been closed"}
        return answer(source, arg)

    ctx.harness = Harness(vanishing)
    options = DrainOptions(duration_s=30, sample_every_s=0.2, pause_s=0.3)
    check = battery_drain.measure(ctx, MANUAL, options)
    assert check.status == "error" and "battery readings before it" in check.reason, check
    assert check.evidence["readings"] >= 2 and check.evidence["level_first_pct"] is not None
    assert "drain so far" in check.reason


# --- a drain stopped before its end (a farm stopped at 6 a.m.): the readings so far are
# its check, an error (it did not run its duration), recorded before the interrupt goes on.
def _stopped_after(app: _App, probes: int) -> Harness:
    answer = app.__call__

    def channel(source: str, arg: Any) -> Any:
        if len(app.probes) >= probes:
            raise KeyboardInterrupt  # Ctrl-C, or SIGTERM/SIGHUP as sigterm_as_interrupt raises
        return answer(source, arg)

    return Harness(channel)


def _session(ctx: ScenarioContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A LabSession of a `manual` phone around ``ctx``, recording into tmp_path/out."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    import yaml

    from devicelab import __version__
    from devicelab.lab import Lab, LabSession
    from devicelab.models import DeviceInfo, RunInfo
    from devicelab.records import RunRecord
    from tests.run.conftest import farm_phone

    monkeypatch.setenv("DEVICELAB_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("DEVICELAB_BATTERY_DURATION_S", "30")
    monkeypatch.setenv("DEVICELAB_BATTERY_SAMPLE_S", "0.2")
    inventory = tmp_path / "inventory.yaml"
    phone = farm_phone("http://127.0.0.1:9/", "127.0.0.1:9")
    inventory.write_text(yaml.safe_dump({"devices": {"phone": phone}}))
    lab = Lab("phone", "none", scenarios=["battery_drain"], inventory=inventory)
    device = DeviceInfo.model_validate(lab.device.summary())
    run = RunInfo(id="r1", kind="battery", started_at=datetime.now(UTC),
                  devicelab_version=__version__, device=device)  # fmt: skip
    link = SimpleNamespace(profile=lab.profile)  # the shaped proxy, as the session holds it
    return LabSession(lab, ctx, RunRecord(run, tmp_path / "out"), proxy=link, fixture=None)


def test_an_interrupted_drain_records_its_readings_so_far(
    ctx: ScenarioContext,
    phone: FakeAdbd,
    app: _App,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # results.json had "checks": [] though the readings were in samples.jsonl.
    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=360.0))
    session = _session(ctx, tmp_path, monkeypatch)
    session.ctx.harness = _stopped_after(app, 9)  # three workload cycles, then Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        session.measure("battery_drain")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (check,) = results["checks"]
    assert (check["id"], check["status"], check["target"]) == ("battery_drain", "error", None)
    assert check["reason"].startswith("interrupted after "), check["reason"]
    assert " battery readings over " in check["reason"] and "drain so far " in check["reason"]
    assert check["evidence"]["readings"] >= 2 and check["evidence"]["duration_s"] > 0
    assert check["value"] is not None and check["value"] > 0


def test_a_drain_interrupted_before_two_readings_says_so(
    ctx: ScenarioContext, phone: FakeAdbd, app: _App
) -> None:
    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=360.0))
    ctx.harness = _stopped_after(app, 1)  # in the first cycle, after the first reading
    with pytest.raises(KeyboardInterrupt) as stop:
        battery_drain.measure(ctx, MANUAL, DrainOptions(duration_s=30, sample_every_s=5))
    check = stop.value.check  # type: ignore[attr-defined]
    assert check.status == "error"
    assert check.reason == "interrupted before two battery readings (1 taken)", check.reason


@pytest.mark.parametrize(
    ("duration", "sample", "says"),
    [
        ("20", None, "DEVICELAB_BATTERY_DURATION_S=20 is shorter than two battery reading "
         "intervals (one every 60 s, the default; DEVICELAB_BATTERY_SAMPLE_S unset)"),
        ("1", "0.9", "DEVICELAB_BATTERY_DURATION_S=1 is shorter than two battery reading"),
        ("20", "1e-9", "DEVICELAB_BATTERY_SAMPLE_S=1e-9 is under 0.1 s"),
        ("20", "0.05", "DEVICELAB_BATTERY_SAMPLE_S=0.05 is under 0.1 s"),
    ],
)  # fmt: skip
def test_a_single_run_refuses_a_drain_it_cannot_measure_before_starting(
    tmp_path: Path, duration: str, sample: str | None, says: str
) -> None:
    # Only `devicelab battery` refused them: a single run read the battery in a busy loop,
    # or judged two readings, after its proxy, routing and Appium were up.
    import yaml

    from tests.run.conftest import farm_phone

    inventory = tmp_path / "inventory.yaml"
    phone = farm_phone("http://127.0.0.1:9/", "127.0.0.1:9")
    inventory.write_text(yaml.safe_dump({"devices": {"phone": phone}}))
    env = {**os.environ, "DEVICELAB_STATE": str(tmp_path / "state"),
           "HOME": str(tmp_path), "DEVICELAB_BATTERY_DURATION_S": duration}  # fmt: skip
    env.pop("DEVICELAB_BATTERY_SAMPLE_S", None)
    if sample is not None:
        env["DEVICELAB_BATTERY_SAMPLE_S"] = sample
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "devicelab", "run", "--device", "phone", "--network", "none",
         "--scenario", "battery_drain", "--inventory", str(inventory), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("devicelab: error: ") and says in line, line
    assert "(hint: " in line and "DEVICELAB_BATTERY_" in line.split("(hint: ")[1], line
    assert not out.exists() and "attach" not in result.stdout, result.stdout
