"""The self-check judges the link: `proxy check` exits 1 and reports say so when it is off.

Before, `devicelab proxy check` printed achieved vs profile and always exited 0, and a run
whose proxy delivered half the profile's bandwidth was judged as if it had the profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devicelab.models.results import AchievedNetwork, NetworkInfo, Results
from devicelab.report import render_html, render_junit, render_markdown


def _link(rtt: float, down: float, up: float, loss: float = 0.0) -> NetworkInfo:
    achieved = AchievedNetwork(rtt_ms=rtt, down_kbps=down, up_kbps=up)
    return NetworkInfo(
        name="4g", rtt_ms=170, down_kbps=10000, up_kbps=5000, loss_pct=loss, achieved=achieved
    )


@pytest.mark.parametrize(
    ("rtt", "down", "up", "off"),
    [
        (173.0, 9900.0, 4990.0, []),  # what 4g achieves here
        (186.9, 10900.0, 4550.0, []),  # at the edges: +10 % RTT (17 ms), rates ±10 %
        (188.0, 10000.0, 5000.0, ["rtt 188.00 ms"]),  # a slow proxy adds its own delay
        (160.0, 10000.0, 5000.0, ["rtt 160.00 ms"]),  # the delay was not applied
        (171.0, 6000.0, 5000.0, ["down 6,000.0 kbps is -40.00 %"]),
        (171.0, 10000.0, 5600.0, ["up 5,600.0 kbps is +12.00 %"]),  # shaping too loose
        # Just outside: the line must not round back into the range it quotes.
        (187.04, 8995.5, 5000.0, ["rtt 187.04 ms", "down 8,995.5 kbps is -10.04 %"]),
    ],
)
def test_the_link_is_off_beyond_the_tolerance_and_says_which_figure(
    rtt: float, down: float, up: float, off: list[str]
) -> None:
    lines = _link(rtt, down, up).off_profile()
    assert len(lines) == len(off)
    for line, start in zip(lines, off, strict=True):
        assert line.startswith(start), line


def test_a_short_link_gets_ten_ms_of_slack_and_a_lossy_link_is_held_to_its_rtt_only() -> None:
    five_g = NetworkInfo(
        name="5g", rtt_ms=10, achieved=AchievedNetwork(rtt_ms=19.5, down_kbps=None)
    )
    assert five_g.off_profile() == []
    lossy = _link(171.0, 700.0, 900.0, loss=10)  # retransmissions: rates far below
    assert lossy.off_profile() == []
    assert _link(400.0, 700.0, 900.0, loss=10).off_profile()[0].startswith("rtt 400.00 ms")
    # ... but never above the profile's rate: that link applied no limit at all.
    (over,) = _link(171.0, 50000.0, 900.0, loss=10).off_profile()
    assert over.startswith("down 50,000.0 kbps is +400.00 %") and "on a lossy link" in over
    assert NetworkInfo(name="4g", rtt_ms=170).off_profile() == []  # nothing measured


def test_jitter_widens_the_rtt_and_odd_figures_neither_crash_nor_pass() -> None:
    # A 40 ms-jitter profile read 202-205 ms round trips and was called off; a profile
    # of 0 kbps raised ZeroDivisionError in `devicelab report`; a NaN rate passed.
    jittery = _link(205.3, 10000.0, 5000.0).model_copy(update={"jitter_ms": 40.0})
    assert jittery.off_profile() == []
    assert _link(205.3, 10000.0, 5000.0).off_profile()[0].startswith("rtt 205.30 ms")
    zero = _link(171.0, 0.0, 5000.0).model_copy(update={"down_kbps": 0.0})
    assert zero.off_profile() == []
    assert _link(171.0, float("nan"), 5000.0).off_profile() == ["down not measured (nan)"]


def test_the_reports_name_a_link_that_was_off(results: Results) -> None:
    net = _link(171.0, 5000.0, 5000.0)
    off = results.model_copy(update={"run": results.run.model_copy(update={"network": net})})
    assert "link off its profile" in render_markdown(off)
    assert "down 5,000.0 kbps is -50.00 %" in render_markdown(off)
    assert "link off its profile" in render_html(off)
    assert 'name="network.off_profile" value="down 5,000.0 kbps' in render_junit(off)
    assert "off its profile" not in render_markdown(results)  # the fixture's link is fine


def _check(monkeypatch: pytest.MonkeyPatch, *measured: AchievedNetwork, json: bool = False) -> Any:
    from typer.testing import CliRunner

    from devicelab.cli import app
    from devicelab.netshape import selfcheck

    readings = iter(measured)
    monkeypatch.setattr(selfcheck, "measure", lambda profile, proxy=None: next(readings))
    args = ["proxy", "check", "--network", "4g", *(["--json"] if json else [])]
    return CliRunner().invoke(app, args)


def test_proxy_check_exits_1_when_the_link_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = AchievedNetwork(rtt_ms=171.0, down_kbps=4000.0, up_kbps=4990.0)
    fine = AchievedNetwork(rtt_ms=172.0, down_kbps=9950.0, up_kbps=4990.0)
    done = _check(monkeypatch, slow, slow)
    assert done.exit_code == 1, done.output
    assert "verdict: FAIL" in done.output and "down 4,000.0 kbps is -60.00 %" in done.output
    as_json = _check(monkeypatch, slow, slow, json=True)
    assert as_json.exit_code == 1 and '"verdict": "fail"' in as_json.output
    assert _check(monkeypatch, fine).exit_code == 0
    # One busy second read a healthy 4g download at -15 %: a second measurement decides.
    again = _check(monkeypatch, slow, fine)
    assert again.exit_code == 0 and "verdict: pass" in again.output, again.output


@pytest.fixture
def results() -> Results:
    from devicelab.report import load_results

    return load_results(Path(__file__).parents[1] / "report" / "data" / "results.json")
