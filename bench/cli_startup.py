"""Wall time of `devicelab --help` against the bare interpreter start, side by side.

Goal (issue 2): `devicelab --help` under 0.3 s. Anchors: `python -c pass` (the floor any
Python CLI pays) and `python -c "import typer"` (the CLI framework alone).

It times this checkout's `devicelab` (the one next to the interpreter running this script,
else the repository's .venv), never whichever is first on PATH, and prints its path.

    .venv/bin/python bench/cli_startup.py [--runs 15]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import _cli  # bench/_cli.py: this script's folder is on sys.path

from devicelab.errors import ProbeFailed, ToolMissing

GOAL_S = 0.300


def wall(argv: list[str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` runs of ``argv``, one each. Raises ProbeFailed."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise ProbeFailed(
                f"{' '.join(argv)} exited {done.returncode}",
                hint="run it by hand to see why",
                command=" ".join(argv),
                stderr=done.stderr.decode(errors="replace"),
            )
    return times


def checkout_script() -> Path:
    """This checkout's ``devicelab`` script: next to the running interpreter (the venv
    that runs this bench), else the repository's .venv. Raises ToolMissing."""
    repo = Path(__file__).resolve().parent.parent
    for candidate in (
        Path(sys.executable).parent / "devicelab",
        repo / ".venv" / "bin" / "devicelab",
    ):
        if candidate.is_file():
            return candidate
    raise ToolMissing("devicelab (in this checkout's venv)", hint="run dev/setup")


def judge(median_s: float) -> tuple[str, bool]:
    """The goal line and whether the median of `devicelab --help` meets it (< 0.3 s)."""
    met = median_s < GOAL_S
    return (
        f"goal: devicelab --help median {median_s:.3f} s "
        f"({_cli.verdict(met)} the goal < {GOAL_S:.3f} s)",
        met,
    )


def main(argv: list[str] | None = None) -> int:
    """Time the rows; returns 0 when the goal is met, 1 when missed. Raises ToolMissing."""
    parser = _cli.parser("cli_startup", __doc__)
    parser.add_argument("--runs", type=_cli.positive_int, default=15)
    runs = parser.parse_args(argv).runs
    script = str(checkout_script())
    rows = [
        ("python -c pass (anchor)", [sys.executable, "-c", "pass"]),
        ("python -c 'import typer'", [sys.executable, "-c", "import typer"]),
        ("devicelab --help", [script, "--help"]),
        ("devicelab report --help", [script, "report", "--help"]),
    ]
    print(f"timing {script}")
    anchor = None
    medians = {}
    print(f"{'command':28}{'median s':>10}{'p90 s':>10}{'x anchor':>10}")
    for label, command in rows:
        times = sorted(wall(command, runs))
        median = statistics.median(times)
        medians[label] = median
        anchor = anchor or median
        p90 = times[int(0.9 * (len(times) - 1))]
        print(f"{label:28}{median:10.3f}{p90:10.3f}{median / anchor:10.2f}")
    line, met = judge(medians["devicelab --help"])
    print(line)
    return _cli.exit_code([met])


if __name__ == "__main__":
    _cli.run("cli_startup", main)
