"""`devicelab battery` started as scripts start it, and how it judges what its runs left:
a farm started in the background (SIGINT ignored, as a non-interactive shell starts
`cmd &`) still stops its runs, each restoring its phone; a run that ended before writing
results does not get a previous farm's results.json read as its own; ``run()`` outside
the main thread is refused before anything starts. Fake phones
(devicelab.testing.fake_adbd) behind the real adb server on a private port, each run
through a real Appium 3 (the chromium driver standing in for the WebView), as in
test_run_farm.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from devicelab.errors import BadInput
from devicelab.platforms.appium import AppiumServer
from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import DrainingBattery, FakeAdbd
from tests.run.conftest import farm_phone

#: What a results.json of a farm run last week looks like: a passed battery drain.
_PREVIOUS = Path(__file__).parents[1] / "report" / "data" / "results.json"


@pytest.fixture(scope="module")
def phone(adb: PrivateAdbServer) -> Iterator[FakeAdbd]:
    with adb.phone() as fake:
        fake.on("dumpsys battery", DrainingBattery(pct_per_hour=4.0))
        yield fake


@pytest.fixture(scope="module")
def inventory(adb: PrivateAdbServer, phone: FakeAdbd, appium: AppiumServer) -> Path:
    """One phone on battery and one that is not attached."""
    devices: dict[str, Any] = {
        "phone-bg": farm_phone(appium.url, phone.serial),
        "phone-absent": farm_phone(appium.url, "127.0.0.1:9"),
    }
    path = Path(adb.env["DEVICELAB_STATE"]) / "inventory.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    return path


def _as_a_background_job() -> None:
    # What `nohup devicelab battery ... &` in a script starts with: SIGINT ignored (the
    # non-interactive shell's doing), SIGHUP ignored (nohup's).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in json.loads((out / "farm.json").read_text())["devices"]}


@pytest.mark.slow
def test_a_farm_started_in_the_background_still_stops_its_runs(
    adb: PrivateAdbServer, phone: FakeAdbd, inventory: Path, tmp_path: Path
) -> None:
    """SIGINT ignored from the start: the runs must not inherit it, or they ignore the
    farm's Ctrl-C, are SIGKILLed after the minute of grace and leave the phone routed."""
    out = tmp_path / "farm"
    farm = subprocess.Popen(
        [sys.executable, "-m", "devicelab", "battery", "--inventory", str(inventory),
         "--device", "phone-bg", "--duration", "10m", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=adb.env,
        preexec_fn=_as_a_background_job,  # noqa: PLW1509 (no threads, no locks)
        start_new_session=True,
    )  # fmt: skip
    try:
        log = out / "phone-bg" / "run.log"
        deadline = time.monotonic() + 240
        while not (log.exists() and "running battery_drain" in log.read_text()):
            assert farm.poll() is None, farm.communicate()
            assert time.monotonic() < deadline, "the run never reached battery_drain"
            time.sleep(0.3)
        assert phone.reverses, "the phone was not routed"
        (run,) = psutil.Process(farm.pid).children()
        ignored = int(
            next(
                line.split()[1]
                for line in Path(f"/proc/{run.pid}/status").read_text().splitlines()
                if line.startswith("SigIgn:")
            ),
            16,
        )
        assert not ignored & (1 << (signal.SIGINT - 1)), "the run ignores SIGINT"
        farm.send_signal(signal.SIGINT)  # ignored, as the shell asked: the farm goes on
        time.sleep(1)
        assert farm.poll() is None and run.is_running(), "an ignored SIGINT stopped the farm"
        stopped = time.monotonic()
        farm.send_signal(signal.SIGTERM)  # `kill $FARM`, later in the script
        _stdout, stderr = farm.communicate(timeout=120)
        took = time.monotonic() - stopped
    finally:
        if farm.poll() is None:
            farm.kill()
    assert farm.returncode == 143, stderr
    assert took < 45, f"{took:.0f} s: the run was killed after the grace, not stopped"
    row = _rows(out)["phone-bg"]
    assert "interrupted before its check ended" in row["reason"], row
    assert "killed" not in row["reason"], row
    assert "devicelab: interrupted" in (out / "phone-bg" / "run.log").read_text()
    assert phone.reverses == {}, "adb reverse left behind"
    assert phone.settings["global"].get("http_proxy") == ":0", "http_proxy left set"


def test_a_previous_farms_results_are_not_read_as_this_runs(
    adb: PrivateAdbServer, inventory: Path, tmp_path: Path
) -> None:
    """The same --out again: an absent phone's folder still holds last week's
    results.json; the row is this run's own error, not that file's check."""
    out = tmp_path / "farm"
    folder = out / "phone-absent"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(_PREVIOUS.read_text())
    result = subprocess.run(
        [sys.executable, "-m", "devicelab", "battery", "--inventory", str(inventory),
         "--device", "phone-absent", "--duration", "2m", "--out", str(out)],
        capture_output=True, text=True, env=adb.env, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    row = _rows(out)["phone-absent"]
    assert (row["status"], row["exit_code"]) == ("error", 3), row
    assert "android device phone-absent (127.0.0.1:9) is absent" in row["reason"], row
    assert "(hint: " in row["reason"], row
    assert row["value"] is None, row


def test_run_outside_the_main_thread_is_refused_before_anything_starts(
    adb: PrivateAdbServer, inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devicelab.farm import BatteryFarm

    for name, value in adb.env.items():
        monkeypatch.setenv(name, value)
    said: list[str] = []
    farm = BatteryFarm(["phone-absent"], duration_s=120, inventory=inventory, say=said.append)
    raised: list[BaseException] = []

    def work() -> None:
        try:
            farm.run(tmp_path / "farm")
        except BaseException as exc:  # handed to the test's thread
            raised.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=60)
    assert len(raised) == 1 and isinstance(raised[0], BadInput), raised
    assert "outside the main thread" in str(raised[0])
    assert "main thread" in raised[0].hint
    assert said == [], "the backend was prepared before the refusal"
    assert not (tmp_path / "farm").exists()
