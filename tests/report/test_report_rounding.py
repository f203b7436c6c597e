"""A check's numbers in results.json carry no float noise: values, samples and summary
statistics are written to SIGNIFICANT_DIGITS (devicelab.models.results), without moving a
value across its target or cutting a whole number. In memory they stay as computed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from devicelab.config import load_targets
from devicelab.models import Check, CheckTarget, Results, RunInfo
from devicelab.models import results as model
from devicelab.report import load_results, render_markdown
from devicelab.targets import judge, resolve

#: A float as repr writes it with more digits than a probe measures: noise.
NOISE = re.compile(r"\d\.\d*\d{10,}")


def _results(checks: list[Check]) -> Results:
    run = RunInfo.model_validate(
        {"id": "r", "kind": "device", "started_at": "2026-12-01T20:00:00Z",
         "devicelab_version": "0.1.0"}
    )  # fmt: skip
    return Results(run=run, checks=checks)


def _written(check: Check) -> dict[str, Any]:
    """``check`` as results.json holds it."""
    data: dict[str, Any] = json.loads(_results([check]).to_json())["checks"][0]
    return data


def test_a_value_converted_to_seconds_and_a_mean_carry_no_noise(tmp_path: Path) -> None:
    book = load_targets()
    setup = judge(
        check="subscription_setup", title="Subscription setup", category="realtime",
        target=resolve(book, "subscription_setup", "web", "4g"), column="4g",
        samples=[28.3, 21.4, 25.0, 24.6, 27.1], unit="ms",
    )  # fmt: skip
    assert setup.unit == "s" and 0.028300000000000002 in setup.samples  # 28.3 ms in s
    delivery = judge(
        check="message_delivery", title="Message delivery", category="latency",
        target=resolve(book, "message_delivery", "web", "4g"), column="4g",
        samples=[180.0, 186.6, 193.0], unit="ms",
    )  # fmt: skip
    assert delivery.summary is not None and delivery.summary.mean == 186.53333333333333
    text = _results([setup, delivery]).to_json()
    assert not NOISE.search(text), NOISE.findall(text)
    written = json.loads(text)["checks"]
    assert written[0]["value"] == 0.02806 and 0.0283 in written[0]["samples"]
    assert written[0]["summary"]["mean"] == 0.02528  # 0.025280000000000004 computed
    assert written[1]["summary"]["mean"] == 186.533
    # Read back, the file gives the same numbers (a report rebuilt from it reads these).
    (tmp_path / "results.json").write_text(text)
    summary = load_results(tmp_path / "results.json").checks[1].summary
    assert summary is not None and summary.mean == 186.533


def test_rounding_keeps_a_value_on_its_side_of_the_target_and_whole_numbers_whole() -> None:
    below = CheckTarget(op="<", value=200, unit="ms", source="story")
    near = Check(id="x", title="X", category="c", status="pass", value=199.99999996,
                 unit="ms", stat="p95", target=below)  # fmt: skip
    written = _written(near)["value"]
    assert written < 200  # 6 digits would say 200
    assert "199.99999996 ms" in render_markdown(_results([near]))
    big = Check(id="b", title="B", category="c", status="skip", value=10485760.25, unit="B")
    assert _written(big)["value"] == 10485760.0  # the integer part whole, the fraction cut
    assert model.significant(7.0) == 7.0 and model.significant(0.0) == 0.0
    assert model.significant(1.7e308) == 1.7e308 and model.significant(5e-324) == 5e-324


def test_the_summary_and_the_value_agree_in_the_file() -> None:
    samples = [100.0 + i / 3 for i in range(20)]
    check = judge(
        check="message_delivery", title="Message delivery", category="latency",
        target=resolve(load_targets(), "message_delivery", "web", "4g"), column="4g",
        samples=samples, unit="ms",
    )  # fmt: skip
    written = _written(check)
    assert written["value"] == written["summary"]["p95"] == 106.017
    for number in [*written["samples"], *written["summary"].values()]:
        digits = repr(number).replace(".", "").lstrip("0")
        assert len(digits) <= model.SIGNIFICANT_DIGITS, number
