"""Fixtures of the sampler tests: a real headless Chromium (the fake phone behind a
private adb server is tests/conftest.py's ``device``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A real headless Chromium (Playwright) with one blank page; yields the page."""
    from devicelab.platforms.web import CHROMIUM_FLAGS, DEFAULT_BROWSER

    if not Path(DEFAULT_BROWSER).is_file():
        pytest.skip(f"no browser at {DEFAULT_BROWSER}")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=DEFAULT_BROWSER, headless=True,
                                         args=list(CHROMIUM_FLAGS))  # fmt: skip
    try:
        yield browser.new_page()
    finally:
        browser.close()
        playwright.stop()
