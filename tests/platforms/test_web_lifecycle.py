"""One web device open at a time in a process: a second create() is refused up front, and
close() frees the slot, also after a create() that failed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devicelab.errors import BadInput, DeviceUnreachable, ToolMissing
from devicelab.models import Device
from devicelab.platforms.web import WebDevice

pytestmark = pytest.mark.skipif(
    not shutil.which("chromium"), reason="needs chromium (apt-get install chromium)"
)


def _device(browser: str | None = None) -> Device:
    return Device(id="web", platform="web", model="Chromium", os="Debian 12", browser=browser)


def _opens() -> int:
    with WebDevice(_device(), proxy_url=None) as web:
        web.open("about:blank")
        return int(web.evaluate("() => 6 * 7"))


def test_a_second_web_device_is_refused_while_one_is_open() -> None:
    # It failed inside Playwright, as "Chromium did not start: It looks like you are using
    # Playwright Sync API inside the asyncio loop. Please use the Async API instead."
    with WebDevice(_device(), proxy_url=None) as first:
        for second in (WebDevice(_device(), proxy_url=None), first):
            with pytest.raises(BadInput, match="already open in this process") as refused:
                second.create()
            assert "close the open one first" in refused.value.hint
        first.open("about:blank")
        assert first.evaluate("() => 1 + 1") == 2, "the refusal touched the open one"
    assert _opens() == 42


@pytest.mark.parametrize(
    ("browser", "error"),
    [("not-installed", ToolMissing), ("/bin/false", DeviceUnreachable)],
    ids=["not-installed", "does-not-start"],
)
def test_a_create_that_failed_leaves_the_slot_free(
    browser: str, error: type[Exception], tmp_path: Path
) -> None:
    failing = WebDevice(_device(str(tmp_path / browser)), proxy_url=None)  # /bin/false stays
    with pytest.raises(error):
        failing.create()
    assert _opens() == 42
    failing.close()  # idempotent after the failed create()
    assert _opens() == 42
