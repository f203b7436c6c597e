"""Judging that a text function runs in linear time by how its time scales, not by a
wall-clock limit (which a loaded 2-core machine misses, and a fast one hides)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def fastest(function: Callable[[str], Any], text: str, tries: int = 3) -> float:
    """The best of ``tries`` timings of ``function(text)`` in seconds (the least disturbed
    by other load on the machine)."""
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        function(text)
        times.append(time.perf_counter() - started)
    return min(times)


def assert_linear(function: Callable[[str], Any], piece: str, count: int) -> None:
    """Eight times the text must cost about eight times as long, not 64 (quadratic
    backtracking): fails when ``function`` on ``piece * count * 8`` takes 24 times its
    time on ``piece * count`` or more (a 0.1 ms floor under the small one)."""
    small = fastest(function, piece * count)
    large = fastest(function, piece * count * 8)
    assert large < 24 * max(small, 1e-4), (piece[:20], small, large)
