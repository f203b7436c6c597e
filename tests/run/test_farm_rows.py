"""How the battery farm reads one run's end into its row, with real processes standing in
for `devicelab run` (what they print and how they end is what the farm judges): the farm's
own Ctrl-C landing after the run printed its results (its phone already put back), and a
results.json a previous farm left in the folder.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from devicelab.farm import _row
from devicelab.farm_runs import Run, interrupt, wait_all

#: A results.json of a finished battery run: battery_drain passed.
_DATA = Path(__file__).parents[1] / "report" / "data" / "results.json"


def _results(folder: Path, name: str = "results.json") -> Path:
    data = json.loads(_DATA.read_text())
    data["run"]["kind"] = "battery"
    data["checks"] = [c for c in data["checks"] if c["id"] == "battery_drain"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data))
    return path


def _writes_results(folder: Path) -> str:
    """The lines of a run's script that write its results.json (as a run does, after it
    started) and print the `results:` line; returns them."""
    made = _results(folder, "made.json")
    results = folder / "results.json"
    return (
        f"import shutil; shutil.copy({str(made)!r}, {str(results)!r})\n"
        f"print('results: {results}', flush=True)\n"
    )


def _start(device: str, out: Path, script: str) -> Run:
    """``script`` run as the farm starts a run (own session, output through a pump)."""
    folder = out / device
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    run = Run(device, process, (folder / "run.log").open("w", encoding="utf-8"), started)
    run.reader = threading.Thread(target=run.pump, args=(lambda _text: None,), daemon=True)
    run.reader.start()
    return run


def test_the_farms_ctrl_c_after_a_run_printed_its_results_is_not_a_kill(tmp_path: Path) -> None:
    """The Ctrl-C lands in the run's interpreter shutdown, after `results:`: it dies by
    SIGINT (-2), but its check ended and its phone was put back before it printed that."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_DFL)  # as Python's shutdown: no handler\n"
        f"{_writes_results(tmp_path / 'phone')}"
        "time.sleep(60)\n"
    )
    run = _start("phone", tmp_path, script)
    deadline = time.monotonic() + 30
    while not run.summarised:
        assert time.monotonic() < deadline, "no results line"
        time.sleep(0.05)
    interrupt({"phone": run})  # the farm's one Ctrl-C
    codes = wait_all({"phone": run}, grace_s=30)
    assert codes["phone"] == -signal.SIGINT
    row = _row("phone", "Pixel 7", "android", run, codes["phone"], tmp_path)
    assert (row.status, row.exit_code) == ("pass", 0), row
    assert "killed" not in row.reason and "left changed" not in row.reason, row


def test_a_signal_the_farm_did_not_send_after_the_results_still_says_so(
    tmp_path: Path,
) -> None:
    """Someone else's SIGINT (not the farm's) keeps its wording: the farm cannot vouch."""
    script = (
        "import os, signal\n"
        "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
        f"{_writes_results(tmp_path / 'phone')}"
        "os.kill(os.getpid(), signal.SIGINT)\n"
    )
    run = _start("phone", tmp_path, script)
    codes = wait_all({"phone": run}, grace_s=30)
    row = _row("phone", "Pixel 7", "android", run, codes["phone"], tmp_path)
    assert row.exit_code == 3 and "killed by SIGINT" in row.reason, row


def test_a_previous_farms_results_json_is_not_this_runs(tmp_path: Path) -> None:
    """The run ended before it wrote anything; the folder holds last week's results.json
    (a passed drain): the row is the run's own error line."""
    _results(tmp_path / "phone")
    time.sleep(0.05)  # older than the run, as a previous farm's file is
    error = "android device phone (127.0.0.1:9) is absent (hint: check `adb devices -l`)"
    script = f"import sys\nprint('devicelab: error: {error}')\nsys.exit(3)\n"
    run = _start("phone", tmp_path, script)
    codes = wait_all({"phone": run}, grace_s=30)
    row = _row("phone", "Pixel 7", "android", run, codes["phone"], tmp_path)
    assert (row.status, row.exit_code, row.reason) == ("error", 3, error), row
    assert row.value is None and row.results == "", row
