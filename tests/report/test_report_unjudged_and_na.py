"""A web run's checks that were measured without a target, and its checks the story marks
N/A on the web: the summary, the terminal lines and the story matrix tell them apart.

The checks are made by the producers a run uses (targets.judge, scenarios.not_applicable),
so the tests follow what a real ``devicelab run --device web`` writes.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

import pytest

from devicelab.cli.run import summary_lines
from devicelab.models import Check, DeviceInfo, NetworkInfo, Results, RunInfo, TargetBook
from devicelab.report import render_html, render_markdown
from devicelab.report._common import verdict_text
from devicelab.scenarios import not_applicable, plan
from devicelab.targets import judge, resolve

#: A network's story column, as the lab judges a web run in it.
COLUMNS = {"wifi": "wifi", "4g": "4g", "slow-3g": "3g"}
LIST_SAMPLES = [640.0, 655.0, 662.0, 670.0, 681.0, 688.0, 693.0, 700.0, 709.0, 709.0]


def _web_run(network: str, checks: list[Check]) -> Results:
    run = RunInfo(
        id=f"web-{network}",
        kind="device",
        started_at=datetime(2026, 11, 30, 19, 0, tzinfo=UTC),
        finished_at=datetime(2026, 11, 30, 19, 1, tzinfo=UTC),
        devicelab_version="0",
        device=DeviceInfo(id="web", platform="web", model="Chromium (desktop)", os="Linux"),
        network=NetworkInfo(name=network),
    )
    return Results(run=run, checks=checks)


def _list_load(book: TargetBook, network: str) -> Check:
    column = COLUMNS[network]
    return judge(
        check="conversation_list_load",
        title="Conversation list load",
        category="latency",
        target=resolve(book, "conversation_list_load", "web", column),
        samples=LIST_SAMPLES,
        unit="ms",
        column=column,
    )


def _na_skips(book: TargetBook) -> list[Check]:
    skips = []
    for scenario in plan(["local_cache_query_50", "battery_drain"]):
        why = not_applicable(scenario, "web", book)
        assert why, scenario.id  # the story's Web (Desktop) column says N/A
        skips.append(scenario.skip(why))
    return skips


def _matrix_rows(md: str) -> list[list[str]]:
    section = md.split("## Story targets", 1)[1].split("\n## ", 1)[0]
    return [
        [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        for line in section.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]


def _matrix_row(md: str, check_id: str) -> list[str]:
    for row in _matrix_rows(md):
        if f"(`{check_id}`)" in row[0]:
            return row
    raise AssertionError(f"no matrix row for {check_id}")


def _html_judged_target(page: str, check_id: str) -> str:
    row = page.split(f"<code>{check_id}</code>", 1)[1].split("</tr>", 1)[0]
    match = re.search(r'<td class="judged"><span class="t">(.*?)</span>', row)
    assert match, row
    return html.unescape(match.group(1))


def test_a_check_measured_without_a_target_is_not_said_not_to_have_run(
    book: TargetBook,
) -> None:
    # The story has no 3G target for the list load: 10 samples, p95 709 ms, a skip.
    measured = _list_load(book, "slow-3g")
    assert measured.status == "skip" and measured.value is not None and measured.target is None
    results = _web_run("slow-3g", [measured])
    verdict = verdict_text(results)
    assert "no check ran" not in verdict
    assert verdict == (
        "1 measured without a target (the story sets none for this device and network), "
        "0 judged (exit code 0)"
    )
    for name, report in {
        "md": render_markdown(results, book),
        "html": html.unescape(render_html(results, book)),
    }.items():
        assert "no check ran" not in report, name
        assert "1 measured without a target" in report, name


def test_the_summary_counts_judged_measured_and_not_run_checks_apart(
    book: TargetBook,
) -> None:
    delivery = judge(
        check="message_delivery",
        title="Message delivery",
        category="latency",
        target=resolve(book, "message_delivery", "web", "3g"),
        samples=[300.0, 320.0],
        unit="ms",
        column="3g",
    )
    assert delivery.status == "pass"
    results = _web_run("slow-3g", [delivery, _list_load(book, "slow-3g"), *_na_skips(book)])
    assert verdict_text(results) == (
        "every judged check passed (1 judged), 1 measured without a target (the story "
        "sets none for this device and network), 2 skipped without running (exit code 0)"
    )


def test_skips_that_measured_nothing_still_say_no_check_ran(book: TargetBook) -> None:
    assert verdict_text(_web_run("wifi", _na_skips(book))) == (
        "no check ran, 2 skipped (exit code 0)"
    )


def test_the_terminal_line_of_a_measured_skip_gives_its_reason(book: TargetBook) -> None:
    lines = summary_lines(_web_run("slow-3g", [_list_load(book, "slow-3g"), *_na_skips(book)]))
    line = next(line for line in lines if "conversation_list_load" in line)
    assert line == (
        "SKIP  conversation_list_load     p95 709 ms — the story sets no target here: value "
        "reported without a verdict"
    ), line
    # N/A skips showed their reason already, and still do, once.
    na = next(line for line in lines if "local_cache_query_50" in line)
    assert na.count("N/A on web") == 1, na


@pytest.mark.parametrize("network", ["wifi", "4g", "slow-3g"])
def test_an_na_check_of_the_web_device_is_na_in_the_judged_column(
    book: TargetBook, network: str
) -> None:
    results = _web_run(network, [_list_load(book, network), *_na_skips(book)])
    md = render_markdown(results, book)
    header = _matrix_rows(md)[0]
    judged = next(i for i, title in enumerate(header) if "(this run)" in title)
    assert judged > 1, header  # a phone column: the story has targets there, for phones
    page = render_html(results, book)
    for check_id in ("local_cache_query_50", "battery_drain"):
        row = _matrix_row(md, check_id)
        assert row[1] == "N/A", row  # the Web (Desktop) column
        assert row[judged] == "N/A · ⏭ skipped", row
        assert _html_judged_target(page, check_id) == "N/A"


def test_a_measured_check_without_a_target_shows_its_value_in_the_matrix(
    book: TargetBook,
) -> None:
    md = render_markdown(_web_run("slow-3g", [_list_load(book, "slow-3g")]), book)
    assert _matrix_row(md, "conversation_list_load")[-1] == "— · ⏭ 709 ms, no target"


def test_a_phone_check_that_did_not_run_keeps_its_target(book: TargetBook) -> None:
    # Only the story's N/A makes a cell N/A: a phone's skip (no sqlite plugin) is not one.
    results = _web_run("4g", [])
    results.run.device = DeviceInfo(id="p", platform="android", model="Pixel 7", os="14")
    skip = plan(["local_cache_query_50"])[0].skip("the test build has no sqlite plugin")
    results = Results(run=results.run, checks=[skip])
    row = _matrix_row(render_markdown(results, book), "local_cache_query_50")
    assert row[1:] == ["N/A", "< 50 ms", "< 50 ms · ⏭ skipped"], row


@pytest.mark.parametrize("network", ["4g", "slow-3g"])
def test_an_na_check_the_web_run_did_not_select_is_na_too(book: TargetBook, network: str) -> None:
    # Without battery_drain in --scenario its row read "< 10 %/h · not run" in the judged
    # column, and "N/A · ⏭ skipped" when selected: the same device, two stories.
    md = render_markdown(_web_run(network, [_list_load(book, network)]), book)
    for check_id in ("local_cache_query_50", "battery_drain"):
        assert _matrix_row(md, check_id)[-1] == "N/A · not run"
