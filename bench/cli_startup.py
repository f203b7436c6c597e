"""Wall time of `devicelab --help` against the bare interpreter start, side by side.

Goal (issue 2): `devicelab --help` under 0.3 s. Anchors: `python -c pass` (the floor any
Python CLI pays) and `python -c "import typer"` (the CLI framework alone).

    .venv/bin/python bench/cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def wall(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    script = shutil.which("devicelab") or str(Path(sys.executable).parent / "devicelab")
    rows = [
        ("python -c pass (anchor)", [sys.executable, "-c", "pass"]),
        ("python -c 'import typer'", [sys.executable, "-c", "import typer"]),
        ("devicelab --help", [script, "--help"]),
        ("devicelab report --help", [script, "report", "--help"]),
    ]
    anchor = None
    print(f"{'command':28}{'median s':>10}{'p90 s':>10}{'x anchor':>10}")
    for label, argv in rows:
        times = sorted(wall(argv, runs))
        median = statistics.median(times)
        anchor = anchor or median
        p90 = times[int(0.9 * (len(times) - 1))]
        print(f"{label:28}{median:10.3f}{p90:10.3f}{median / anchor:10.2f}")
    print("goal: devicelab --help median < 0.300 s")


if __name__ == "__main__":
    main()
