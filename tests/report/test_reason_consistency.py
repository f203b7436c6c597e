"""A check's reason is shown whole, masked, in the Markdown, HTML and JUnit reports alike."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from devicelab.models import Results
from devicelab.report import render_html, render_junit, render_markdown

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlc2lnbmF0dXJl"


def test_a_long_reason_is_whole_and_masked_in_every_format(raw: dict[str, Any]) -> None:
    head = "the upload stalled: " + "x" * 700
    tail = "LAST-WORDS-OF-THE-REASON"
    raw["checks"][2]["reason"] = f"{head} token {JWT} {tail}"
    results = Results.model_validate(raw)
    md = render_markdown(results)
    html = render_html(results)
    junit = render_junit(results)
    for name, text in (("md", md), ("html", html), ("junit", junit)):
        assert head in text and tail in text, name
        assert JWT not in text, name
        assert "more characters" not in text and "chars)" not in text, name
    case = next(
        c for c in ET.fromstring(junit).iter("testcase") if c.get("name") == raw["checks"][2]["id"]
    )
    error = case.find("error")
    assert error is not None and tail in (error.get("message") or "")
