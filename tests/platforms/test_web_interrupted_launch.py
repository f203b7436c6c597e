"""A Ctrl-C while Chromium starts leaves no browser and no event loop behind."""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

import psutil
import pytest

from devicelab.models import Device
from devicelab.platforms.web import WebDevice

pytestmark = pytest.mark.skipif(
    not shutil.which("chromium"), reason="needs chromium (apt-get install chromium)"
)


def _browsers() -> list[psutil.Process]:
    children = psutil.Process(os.getpid()).children(recursive=True)
    return [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_ctrl_c_just_after_launch_closes_chromium_and_frees_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It left 6-9 Chromium processes and Playwright's loop set in the thread: the next
    # session's asyncio.run() failed ("cannot be called from a running event loop").
    from playwright import sync_api

    real = sync_api.sync_playwright

    class Interrupting:
        """sync_playwright() whose launch() is cut by a Ctrl-C once the browser is up."""

        def __init__(self) -> None:
            self.manager = real()

        def start(self) -> Any:
            started = self.manager.start()
            launch = started.chromium.launch

            def launch_then_interrupt(**kwargs: Any) -> Any:
                launch(**kwargs)
                assert _browsers(), "the browser should be up before the Ctrl-C"
                raise KeyboardInterrupt

            monkeypatch.setattr(started.chromium, "launch", launch_then_interrupt)
            return started

        def __exit__(self, *exc: object) -> None:
            self.manager.__exit__(*exc)

    monkeypatch.setattr(sync_api, "sync_playwright", Interrupting)
    device = Device(id="web", platform="web", model="Chromium", os="Debian 12")
    before = len(_browsers())
    with pytest.raises(KeyboardInterrupt):
        WebDevice(device, proxy_url=None).create()
    assert len(_browsers()) == before
    assert asyncio.run(asyncio.sleep(0, "free")) == "free"
