"""A robust trend of a series: the Theil-Sen slope (the median of every pairwise slope).

One outlier (a GC that ran late, a page that was mid-load) moves a least-squares fit; it
barely moves the median of the pairwise slopes (breakdown point about 29 %).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["least_squares_slope", "theil_sen_slope"]


def theil_sen_slope(t: Sequence[float], v: Sequence[float]) -> float:
    """The median of (v[j] - v[i]) / (t[j] - t[i]) over every pair with t[j] > t[i], in
    units of v per unit of t. Raises ValueError with fewer than two distinct times."""
    if len(t) != len(v):
        raise ValueError("t and v differ in length")
    slopes = sorted(
        (v[j] - v[i]) / (t[j] - t[i])
        for i in range(len(t))
        for j in range(i + 1, len(t))
        if t[j] != t[i]
    )
    if not slopes:
        raise ValueError("a slope needs at least two points at different times")
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def least_squares_slope(t: Sequence[float], v: Sequence[float]) -> float:
    """The ordinary least-squares slope (reported beside Theil-Sen, for comparison).
    Raises ValueError with fewer than two distinct times."""
    n = len(t)
    if n != len(v) or n < 2:
        raise ValueError("a slope needs two or more points, as many t as v")
    mt, mv = sum(t) / n, sum(v) / n
    var = sum((x - mt) ** 2 for x in t)
    if var == 0:
        raise ValueError("a slope needs points at different times")
    return sum((x - mt) * (y - mv) for x, y in zip(t, v, strict=True)) / var
