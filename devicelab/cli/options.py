"""Option parsers shared by the commands: the text a user typed to a value, or BadInput.

Pure functions (no backend_checks, no I/O), so any command module may import them at
module scope: ``--dsn``'s callback, ``--out``, durations, and ``backend load``'s steps.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from devicelab.errors import BadInput

__all__ = [
    "DURATION_HINT",
    "MAX_DURATION_S",
    "MAX_USERS",
    "MIN_WINDOW_S",
    "nonblank_dsn",
    "out_folder",
    "parse_duration",
    "parse_mix",
    "parse_users",
    "parse_window",
]

#: The most users one load step may have on this machine's runner (the story's are 1000).
MAX_USERS = 100_000
#: The shortest measurement window a load step may have (a 1 ms window judged 0 requests).
MIN_WINDOW_S = 1.0
#: The longest duration any command takes (a load step, a battery drain run): a day. A
#: 400-digit --duration read as infinity, started the load, then failed in its workers.
MAX_DURATION_S = 24 * 3600.0
#: The one hint of every bad duration, whatever was wrong with it.
DURATION_HINT = "e.g. 90, 60s, 30m or 2h: more than 0, at most 24 h"
# The sign is read so that "-1s" is told it must be positive, not that it is no duration.
_DURATION = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` ("60s", "2m", "90", "1.5h"). Raises BadInput for no duration, or
    one not positive or longer than :data:`MAX_DURATION_S` (24 h)."""
    match = _DURATION.match(text)
    if not match:
        raise BadInput(f"bad duration {text!r}", hint=DURATION_HINT)
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    seconds = float(match.group(1)) * scale
    if seconds <= 0:
        raise BadInput(f"bad duration {text!r}: must be positive", hint=DURATION_HINT)
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise BadInput(f"bad duration {shown!r}: longer than 24 h", hint=DURATION_HINT)
    return seconds


def nonblank_dsn(value: str | None) -> str | None:
    """The ``--dsn`` callback of every backend command: returns ``value``. Raises BadInput
    for an empty DSN rather than read it as libpq's defaults (or, by the load, as "no
    database")."""
    if value is not None and not value.strip():
        raise BadInput(
            "--dsn is empty",
            hint="give a DSN such as postgresql://user@host:5432/db, or leave --dsn out"
            " for the managed cluster",
        )
    return value


def out_folder(text: str) -> Path:
    """The ``--out`` folder of a command. Raises BadInput for an empty one (it read as the
    current folder, and the reports landed among the user's files)."""
    if not text.strip():
        raise BadInput("--out is empty", hint="name a folder, e.g. --out devicelab-out")
    return Path(text)


def parse_users(text: str) -> list[int]:
    """The user counts of the steps in ``text`` ("100,1000"). Raises BadInput."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        steps = []
    if not steps or any(n < 1 for n in steps):
        raise BadInput(f"bad --users {text!r}", hint="a comma-separated list, e.g. 100,1000")
    if max(steps) > MAX_USERS:
        raise BadInput(
            f"bad --users {text!r}: more than {MAX_USERS:,} users in one step",
            hint="the story's steps are 100,1000; beyond this, run Locust's master and"
            " workers on several machines (docs/load.md)",
        )
    if len(set(steps)) < len(steps):
        raise BadInput(f"bad --users {text!r}: a step given twice", hint="e.g. 100,1000")
    return steps


def parse_mix(text: str) -> str:
    """``backend load --mix``: returns ``text`` when it names a mix. Raises BadInput."""
    if text not in ("full", "read"):
        raise BadInput(f"bad --mix {text!r}", hint="full or read")
    return text


def parse_window(text: str | None, option: str = "--duration") -> float | None:
    """``backend load --duration`` (or ``backend check --load``, named by ``option``): a
    step's measurement window in seconds, None when not given. Raises BadInput for a bad
    duration (an empty one too) or one shorter than :data:`MIN_WINDOW_S` (the verdict
    needs requests to judge)."""
    if text is None:
        return None
    seconds = parse_duration(text)
    if seconds < MIN_WINDOW_S:
        raise BadInput(
            f"{option} {text}: a step's window is {MIN_WINDOW_S:g} s at least",
            hint=f"the verdict needs requests to judge: e.g. {option} 30s",
        )
    return seconds
