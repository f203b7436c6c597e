"""`devicelab battery` options refused before anything starts (no backend, proxy, Appium or
phone touched), and the farm's row of a run interrupted before it measured. Fast: no
phone, no Appium; the inventory names phones that are never reached.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devicelab.testing.standins import lab_state
from tests.run.conftest import farm_phone


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, str]]:
    """A lab of its own (state, home) whose inventory has one phone, never reached."""
    with lab_state("dl-farm-options-") as env:
        env.pop("DEVICELAB_BATTERY_SAMPLE_S", None)
        env.pop("DEVICELAB_BATTERY_DURATION_S", None)
        path = Path(env["DEVICELAB_STATE"]) / "inventory.yaml"
        devices = {"phone-slow": farm_phone("http://127.0.0.1:9/", "127.0.0.1:9")}
        path.write_text(yaml.safe_dump({"devices": devices}))
        env["INVENTORY"] = str(path)
        yield env


def _battery(lab: dict[str, str], out: Path, *args: str, sample: str | None = None) -> str:
    """`devicelab battery ARGS` refused: returns its one line on stderr (exit 2, nothing
    prepared, nothing written)."""
    env = dict(lab)
    if sample is not None:
        env["DEVICELAB_BATTERY_SAMPLE_S"] = sample
    result = subprocess.run(
        [sys.executable, "-m", "devicelab", "battery", "--inventory", lab["INVENTORY"],
         "--device", "phone-slow", "--network", "4g", "--out", str(out), *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("devicelab: error: ") and "(hint: " in lines[0], lines[0]
    assert not out.exists(), "a refused farm wrote its folder"
    return lines[0]


@pytest.mark.parametrize("duration", ["1s", "10ms", "119s"])
def test_a_drain_shorter_than_two_readings_is_refused(
    lab: dict[str, str], tmp_path: Path, duration: str
) -> None:
    # --duration 1s passed as a drain of -0.0 %/h from two readings 3.3 s apart.
    line = _battery(lab, tmp_path / "farm", "--duration", duration)
    assert "shorter than two battery reading intervals (one every 60 s" in line, line
    assert "a drain run is 120 s at least" in line, line
    assert "DEVICELAB_BATTERY_SAMPLE_S" in line, line


@pytest.mark.parametrize("sample", ["0", "-1", "abc", "inf", "nan"])
def test_a_sampling_interval_that_is_no_number_of_seconds_is_refused(
    lab: dict[str, str], tmp_path: Path, sample: str
) -> None:
    # It was read inside each run, after the backend, proxy and Appium were up (exit 3);
    # inf "passed" on two readings, "every inf s".
    line = _battery(lab, tmp_path / "farm", "--duration", "20s", sample=sample)
    assert f"DEVICELAB_BATTERY_SAMPLE_S={sample!r} is not a number of seconds > 0" in line
    assert "hint: set DEVICELAB_BATTERY_SAMPLE_S to" in line, line


@pytest.mark.parametrize("sample", ["3600", "1e9", "10.5"])
def test_a_sampling_interval_longer_than_half_the_run_is_refused(
    lab: dict[str, str], tmp_path: Path, sample: str
) -> None:
    line = _battery(lab, tmp_path / "farm", "--duration", "20s", sample=sample)
    assert f"DEVICELAB_BATTERY_SAMPLE_S={sample}" in line, line
    assert "hint: a --duration of" in line and "DEVICELAB_BATTERY_SAMPLE_S of 10 s or less" in line


@pytest.mark.parametrize("duration", ["soon", "-1s", "0", "9" * 400, "25h"])
def test_every_bad_duration_gets_the_same_hint(
    lab: dict[str, str], tmp_path: Path, duration: str
) -> None:
    from devicelab.cli.options import DURATION_HINT

    line = _battery(lab, tmp_path / "farm", "--duration", duration)
    assert line.endswith(f"(hint: {DURATION_HINT})"), line


def _interrupted_row(tmp_path: Path, samples: str | None) -> str:
    """The farm's reason for a run it interrupted (exit 130) before the run wrote results,
    with ``samples`` as the run's samples.jsonl (None: none)."""
    from devicelab.farm import _row
    from devicelab.farm_runs import Run

    folder = tmp_path / "phone-slow"
    folder.mkdir()
    process = subprocess.Popen([sys.executable, "-c", ""])  # a run that has ended
    process.wait()
    run = Run("phone-slow", process, (folder / "run.log").open("w"), time.time() - 1)
    run.interrupted = True
    if samples is not None:
        (folder / "samples.jsonl").write_text(samples)
    row = _row("phone-slow", "Pixel", "android", run, 130, tmp_path)
    assert (row.status, row.exit_code) == ("error", 130), row
    return row.reason


def test_a_run_interrupted_before_measuring_names_no_readings(tmp_path: Path) -> None:
    # It said "readings so far in .../samples.jsonl", a file that did not exist.
    reason = _interrupted_row(tmp_path, None)
    assert "samples.jsonl" not in reason, reason
    assert "interrupted before its check ended (before measuring: no battery reading yet)" in (
        reason
    )


def test_a_run_interrupted_before_its_first_battery_reading_names_no_readings(
    tmp_path: Path,
) -> None:
    # The sample log is created empty (and may hold other samplers' readings) first.
    cpu = '{"t":0.5,"metric":"cpu.app_pct","value":3.0,"unit":"%","source":"top"}\n'
    reason = _interrupted_row(tmp_path, cpu)
    assert "samples.jsonl" not in reason and "no battery reading yet" in reason, reason


def test_a_run_interrupted_while_measuring_names_its_readings(tmp_path: Path) -> None:
    level = '{"t":0.5,"metric":"battery.level_pct","value":80.0,"unit":"%","source":"dumpsys"}\n'
    reason = _interrupted_row(tmp_path, level)
    assert f"readings so far in {tmp_path / 'phone-slow' / 'samples.jsonl'}" in reason, reason


def test_a_sampling_interval_under_a_tenth_of_a_second_is_refused(
    lab: dict[str, str], tmp_path: Path
) -> None:
    # 1e-9 was taken: the runs would read the battery in a busy loop.
    line = _battery(lab, tmp_path / "farm", "--duration", "20s", sample="1e-9")
    assert "DEVICELAB_BATTERY_SAMPLE_S=1e-9 is under 0.1 s" in line, line
    assert "hint: set DEVICELAB_BATTERY_SAMPLE_S to 0.1 or more" in line, line
