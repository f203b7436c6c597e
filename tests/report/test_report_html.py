"""The HTML report: self-contained, no URL anywhere, and its plots drawn by Chromium."""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from devicelab.models import Results, TargetBook
from devicelab.report import render_html
from devicelab.report.html import defang

SCHEME = re.compile(r"(?i)https?://")


class Collector(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Collector:
    collector = Collector()
    collector.feed(page)
    collector.close()
    return collector


def test_no_url_and_nothing_that_fetches(results: Results, book: TargetBook) -> None:
    page = render_html(results, book)
    assert not SCHEME.search(page)
    assert "xmlns" not in page and "url(" not in page and "@import" not in page
    doc = parse(page)
    tags = [tag for tag, _ in doc.tags]
    for fetching in ("script", "link", "img", "iframe", "object", "embed", "a", "base"):
        assert fetching not in tags, fetching
    for tag, attrs in doc.tags:
        assert not {"src", "href", "srcset", "action", "poster"} & set(attrs), (tag, attrs)
    csp = next(a for t, a in doc.tags if t == "meta" and a.get("http-equiv"))
    assert csp["content"] == "default-src 'none'; style-src 'unsafe-inline'"
    # The URLs of the run are shown, defanged, as text.
    text = "".join(doc.text)
    assert "supabase https[:]//abcdefgh.supabase.co" in text
    assert "wss[:]//abcdefgh.supabase.co/realtime" in text
    assert "503 from http[:]//127.0.0.1:54321/storage" in text


def test_defang_never_leaves_a_scheme() -> None:
    assert defang("see HTTPS://x.io and http://y and ftp://z") == (
        "see HTTPS[:]//x.io and http[:]//y and ftp[:]//z"
    )
    assert defang("a:b //c https[:]//d") == "a:b //c https[:]//d"


def test_run_text_is_escaped_and_secrets_masked(results: Results) -> None:
    page = render_html(results)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    for secret in ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", "hunter2", "Bearer"):
        assert secret not in page
    assert "postgresql[:]//postgres:***@127.0.0.1" in page


def test_one_plot_per_series_and_per_sampled_check(results: Results, book: TargetBook) -> None:
    doc = parse(render_html(results, book))
    plots = [(a["data-plot"], a["data-name"]) for t, a in doc.tags if t == "svg"]
    assert plots == [
        ("series", "memory"),
        ("series", "battery"),
        ("series", "cpu"),
        ("distribution", "message_delivery"),
        ("distribution", "conversation_list_load"),
    ]
    classes = [a.get("class") for t, a in doc.tags if t in ("line", "path", "rect")]
    # Two latency targets; memory_100_conversations bounds an increase, no line on levels.
    assert classes.count("guide target") == 2
    assert classes.count("guide budget") == 1  # battery: the drain budget per hour
    assert classes.count("line") == 3


def chromium() -> str:
    path = os.environ.get("DEVICELAB_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.skip("no Chromium: set DEVICELAB_CHROMIUM or install chromium")
    return path


def test_chromium_draws_the_plots_and_fetches_nothing(
    results: Results, book: TargetBook, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    report = tmp_path / "report.html"
    report.write_text(render_html(results, book), encoding="utf-8")
    requested: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium(),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.goto(report.as_uri(), wait_until="load")
            drawn: list[dict[str, Any]] = page.eval_on_selector_all(
                "svg.plot",
                """els => els.map(svg => ({
                    kind: svg.dataset.plot,
                    width: svg.getBoundingClientRect().width,
                    line: [...svg.querySelectorAll('path.line')].map(
                        p => p.getTotalLength()),
                    bars: [...svg.querySelectorAll('rect.bar')].filter(
                        r => r.getBoundingClientRect().height > 0).length,
                    ticks: svg.querySelectorAll('text.tick').length,
                }))""",
            )
            heading = page.inner_text("h1")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert requested == [report.as_uri()]
    assert heading == "devicelab report"
    assert [d["kind"] for d in drawn] == ["series"] * 3 + ["distribution"] * 2
    for plot in drawn:
        assert plot["width"] > 300 and plot["ticks"] >= 6, plot
        if plot["kind"] == "series":
            assert len(plot["line"]) == 1 and plot["line"][0] > 400, plot
        else:
            assert plot["bars"] >= 4, plot
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_recommended_indexes_are_shown_with_their_proof(raw: dict[str, Any]) -> None:
    raw["run"].update(kind="backend", device=None, network=None)
    raw["checks"][0]["evidence"] = {
        "suggestions": [
            {
                "ddl": "CREATE INDEX ON public.messages (conversation_id, created_at DESC)",
                "proven": True,
                "proof": "HypoPG on message_fetch: planner cost 975 -> 345",
                "queries": ["message_fetch"],
            }
        ]
    }
    page = render_html(Results.model_validate(raw))
    section = page.split("<h2>Recommended indexes</h2>", 1)[1].split("</section>", 1)[0]
    assert "PROVEN</span> HypoPG on message_fetch: planner cost 975 -&gt; 345" in section
    assert "<code>CREATE INDEX ON public.messages (conversation_id, created_at DESC)</code>" in (
        section
    )
    assert page.index("Recommended indexes") < page.index("<h2>Run</h2>")


def test_control_characters_of_a_reason_never_reach_the_html(raw: dict[str, Any]) -> None:
    # Evidence was sanitised, a reason was not: NUL and ESC are parse errors in HTML.
    raw["checks"][0]["reason"] = "bad \x00\x01\x1b[31m red \uffff end"
    html = render_html(Results.model_validate(raw))
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\uffff]", html)
    assert "bad \ufffd\ufffd\ufffd[31m red \ufffd end" in html
