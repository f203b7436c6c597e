"""The words of backend reasons: counts in the singular for one, and why a proof is not."""

from __future__ import annotations

import pytest

from backend_checks.proofs import PROOF_MIN_GAIN, _shortfall
from backend_checks.reasons import judged_reason
from devicelab.models import CheckTarget
from devicelab.numbers import fmt_judged, fmt_value


def test_a_cost_that_fell_too_little_says_by_how_much_and_what_a_proof_needs() -> None:
    # "unproven: HypoPG on unread_count: planner cost 2053 -> 1871" said nothing of why.
    assert PROOF_MIN_GAIN == 0.10
    assert _shortfall(True, 2053, 1871) == " (the cost fell 8.9 %, under the 10 % a proof needs)"
    assert _shortfall(True, 100, 120) == " (the cost did not fall; a proof needs it 10 % lower)"
    assert _shortfall(False, 100, 10) == " (the planner did not pick the index)"
    assert _shortfall(True, 100, 80) == ""


@pytest.mark.parametrize(
    ("unit", "one", "two"),
    [
        ("scans", "1 scan", "2 scans"),
        ("problems", "1 problem", "2 problems"),
        ("indexes", "1 index", "2 indexes"),
        ("statements", "1 statement", "2 statements"),
        ("users", "1 user", "2 users"),
        ("ms", "1 ms", "2 ms"),  # a measure, not a count: unchanged
        ("MB", "1 MB", "2 MB"),
        ("s", "1 s", "2 s"),
        ("%", "1%", "2%"),
    ],
)
def test_a_count_of_one_is_singular_and_measures_are_untouched(
    unit: str, one: str, two: str
) -> None:
    assert fmt_value(1, unit) == one
    assert fmt_value(1.0, unit) == one
    assert fmt_value(2, unit) == two
    assert fmt_value(0, unit) == two.replace("2", "0", 1)


def test_a_judged_reason_counting_one_reads_in_the_singular() -> None:
    target = CheckTarget(op="==", value=0, unit="problems", source="targets.yaml")
    assert fmt_judged(1, "problems", target) == "1 problem"
    said = judged_reason("{value} found", 1, "problems", target, "x")
    assert said == "1 problem found misses == 0 problems: x"


def test_the_terminal_line_of_backend_check_counts_one_in_the_singular() -> None:
    # It printed each value with its own format: "1 problems", "45.67 %" beside the reports'.
    from devicelab.cli.backend import _value
    from devicelab.models import Check

    def line(value: float, unit: str) -> str:
        return _value(
            Check(id="c", title="C", category="health", status="pass", value=value, unit=unit)
        )

    assert (line(1, "problems"), line(2, "scans"), line(45.67, "%")) == (
        "1 problem",
        "2 scans",
        "45.7%",
    )
