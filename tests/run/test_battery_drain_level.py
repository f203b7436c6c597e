"""battery_drain when the level does not fall as a drain does: a level that rises while
the phone reports current flowing out (a charger the status does not show, a reader that
gets the current's sign wrong) is "still charging", not a negative drain that passes; a
battery at 0 % cannot be measured. Android: a fake phone behind a private real adb server
(DrainingBattery with a rising level, current_now negative). iPhone: a fake usbmuxd whose
phone's IOPMPowerSource says discharging (IsCharging false, InstantAmperage -312 mA as the
unsigned 64-bit number iOS sends) while CurrentCapacity rises, read through pymobiledevice3.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devicelab.config import load_targets
from devicelab.harness import Harness
from devicelab.models import PowerControl
from devicelab.samplers import SampleLog
from devicelab.samplers.android import AndroidSampler, AppPss
from devicelab.samplers.base import Sampler
from devicelab.scenarios import ScenarioContext, ScenarioOptions, battery_drain
from devicelab.scenarios.battery_drain import EMPTY, STILL_CHARGING, DrainOptions
from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import DrainingBattery, FakeAdbd
from devicelab.testing.fake_lockdownd import IPHONE_BATTERY

PKG = "app.messaging.test"
MANUAL = PowerControl(kind="manual")
SHORT = DrainOptions(duration_s=3, sample_every_s=0.4, pause_s=0.2)
UDID = "00008030-001A2B3C4D5E802E"


class _Link:
    def go_offline(self, seconds: float | None = None) -> None:
        raise AssertionError("battery_drain never drops the link")

    def go_online(self) -> None:
        raise AssertionError("battery_drain never drops the link")


def _app(_source: str, arg: Any) -> Any:
    """The WebView's channel: every probe answers one sample."""
    return {"ok": True, "value": {"samples": [12.0], "unit": "ms"}}


def _ctx(platform: str, battery: Sampler | None = None, heap: AppPss | None = None) -> Any:
    return ScenarioContext(
        harness=Harness(_app), platform=platform, column="wifi", book=load_targets(),
        options=ScenarioOptions(), conversation_id="c-ab", big_conversation_id="c-big",
        search_terms=["hello"], link=_Link(), heap_mb=heap, battery=battery,
    )  # fmt: skip


@pytest.fixture
def phone(adb_server: PrivateAdbServer) -> Iterator[FakeAdbd]:
    with adb_server.phone() as fake:
        yield fake


@pytest.fixture
def android(adb_server: PrivateAdbServer, phone: FakeAdbd, tmp_path: Path) -> Any:
    """A ScenarioContext as the lab builds it on android (the sampler behind heap_mb)."""
    import adbutils

    device = adbutils.AdbClient(host="127.0.0.1", port=adb_server.port).device(phone.serial)
    sampler = AndroidSampler(SampleLog(tmp_path / "samples.jsonl"), device, PKG)
    return _ctx("android", heap=AppPss(sampler))


def test_a_level_that_rises_while_current_flows_out_is_still_charging(
    android: ScenarioContext, phone: FakeAdbd
) -> None:
    # 1 % a second up (3 % over the run), "discharging", -512 mA: it passed as -3600 %/h.
    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=-3600.0, start_pct=50.0))
    check = battery_drain.measure(android, MANUAL, SHORT)
    assert (check.status, check.reason) == ("error", STILL_CHARGING), check
    assert check.value is None and check.target is None
    assert check.evidence["current_median_ma"] == -512
    assert check.evidence["level_rise_pct"] > 1


def test_a_rise_within_one_percent_step_is_noise_and_said(
    android: ScenarioContext, phone: FakeAdbd
) -> None:
    # 0.2 % up over the run: a fuel gauge settling, less than one whole-percent step.
    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=-240.0, start_pct=50.0))
    check = battery_drain.measure(android, MANUAL, SHORT)
    assert check.status == "pass", check
    assert check.value is not None and check.value < 0
    assert "the level did not fall over the run" in check.reason


def test_a_level_that_does_not_move_is_a_drain_of_zero_not_minus_zero(
    android: ScenarioContext, phone: FakeAdbd
) -> None:
    # Minus a zero slope: results.json and farm.json said "value": -0.0.
    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=0.0, start_pct=50.0))
    check = battery_drain.measure(android, MANUAL, SHORT)
    assert check.status == "pass", check
    assert check.value == 0 and math.copysign(1.0, check.value) == 1.0, check
    assert '"value":0.0' in check.model_dump_json(), check.model_dump_json()
    assert "-0.0" not in check.model_dump_json()


def test_a_battery_at_zero_percent_is_no_drain(android: ScenarioContext, phone: FakeAdbd) -> None:
    # Flat at 0 % with current flowing out: it passed as 0 %/h.
    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=4.0, start_pct=0.0))
    check = battery_drain.measure(android, MANUAL, SHORT)
    assert (check.status, check.reason) == ("error", EMPTY), check
    assert check.evidence["level_last_pct"] == 0


def test_a_level_that_reaches_zero_says_the_drain_is_a_lower_bound(
    android: ScenarioContext, phone: FakeAdbd
) -> None:
    # 0.5 % left, falling 0.5 % a second: empty within the run.
    phone.on("dumpsys battery", DrainingBattery(pct_per_hour=1800.0, start_pct=0.5))
    check = battery_drain.measure(android, MANUAL, SHORT)
    assert check.status == "fail", check
    assert "the level reached 0 %" in check.reason


def test_an_iphone_whose_level_rises_while_discharging_is_still_charging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pymobiledevice3")
    from devicelab.samplers.ios import IosSampler
    from devicelab.testing.fake_usbmuxd import FakeIPhone, FakeUsbmuxd

    monkeypatch.setenv("HOME", str(tmp_path))  # pymobiledevice3's pair records
    started = time.monotonic()

    def rising() -> dict[str, Any]:
        # IsCharging false, InstantAmperage -312 mA (unsigned), 1 % a second up.
        return {**IPHONE_BATTERY, "CurrentCapacity": 50 + int(time.monotonic() - started)}

    with FakeUsbmuxd() as mux:
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", mux.address)
        mux.attach(FakeIPhone(UDID, battery=rising))
        log = SampleLog(tmp_path / "samples.jsonl", t0=time.monotonic())
        sampler = IosSampler(log, UDID, usbmux_address=mux.address)
        check = battery_drain.measure(_ctx("ios", battery=sampler), MANUAL, SHORT)
    assert (check.status, check.reason) == ("error", STILL_CHARGING), check
    assert check.evidence["current_median_ma"] == -312
    assert check.evidence["level_rise_pct"] > 1
