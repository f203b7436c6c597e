"""Device routing and its journal: changes are journaled first and undone on every exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import DeviceUnreachable
from devicelab.journal import Journal
from devicelab.netshape.proxy import ShapedProxy
from devicelab.platforms.routing import (
    HTTP_PROXY_KIND,
    REVERSE_KIND,
    AndroidRoute,
    android_undoers,
    playwright_proxy,
)


class Phone:
    """Stands in for adbutils' AdbDevice (the other side is a phone): keeps its settings."""

    def __init__(self, serial: str = "R5CT1", http_proxy: str = "null") -> None:
        self.serial = serial
        self.http_proxy = http_proxy
        self.reverses: set[str] = set()
        self.fail_reverse = False

    def shell(self, cmd: str) -> str:
        if cmd == "settings get global http_proxy":
            return self.http_proxy + "\n"
        prefix = "settings put global http_proxy "
        assert cmd.startswith(prefix), cmd
        self.http_proxy = cmd.removeprefix(prefix)
        return ""

    def shell2(self, cmd: str, *, v2: bool = False) -> Any:
        from adbutils import ShellReturn

        return ShellReturn(command=cmd, returncode=0, output=self.shell(cmd))

    def reverse_list(self) -> list[Any]:
        from adbutils import ReverseItem

        return [ReverseItem(remote, remote) for remote in sorted(self.reverses)]

    def reverse(self, remote: str, local: str) -> None:
        from adbutils.errors import AdbError

        if self.fail_reverse:
            raise AdbError("device offline")
        self.reverses.add(remote)

    def reverse_remove(self, remote: str) -> None:
        self.reverses.discard(remote)


def test_android_route_is_undone_on_exit_and_on_ctrl_c(tmp_path: Path) -> None:
    phone = Phone()
    journal = Journal(tmp_path / "journal.jsonl")
    with AndroidRoute(phone, 8080, journal):
        assert phone.http_proxy == "127.0.0.1:8080"
        assert phone.reverses == {"tcp:8080"}
        assert {e.kind for e in journal.pending()} == {HTTP_PROXY_KIND, REVERSE_KIND}
    assert phone.http_proxy == ":0" and not phone.reverses
    assert journal.pending() == []

    phone.http_proxy = "10.0.0.2:3128"  # the user's own proxy comes back afterwards
    with pytest.raises(KeyboardInterrupt), AndroidRoute(phone, 8081, journal):
        raise KeyboardInterrupt
    assert phone.http_proxy == "10.0.0.2:3128" and not phone.reverses


def test_a_crashed_run_is_undone_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    # A run journals a change, makes it, and dies without any cleanup.
    code = (
        "import os, sys; from devicelab.journal import Journal; "
        f"Journal({str(path)!r}).record('android.http_proxy', 'R5CT1', {{'previous': 'null'}}); "
        "os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 9
    phone = Phone(http_proxy="127.0.0.1:8080")
    with Journal(path, android_undoers(lambda serial: phone)) as journal:
        assert phone.http_proxy == ":0"
        assert journal.pending() == []


def test_adb_failures_become_device_unreachable_and_what_was_tried_is_undone(
    tmp_path: Path,
) -> None:
    phone = Phone()
    phone.fail_reverse = True
    journal = Journal(tmp_path / "journal.jsonl")
    with pytest.raises(DeviceUnreachable, match="R5CT1") as caught:
        AndroidRoute(phone, 8080, journal).apply()
    assert caught.value.serial == "R5CT1"
    # Journaled before it was tried, and undone (it may have half-happened) before the
    # error went on: the phone is as it was.
    assert journal.pending() == [] and not phone.reverses and phone.http_proxy == "null"


def test_playwright_proxy_setting_proxies_loopback_too() -> None:
    assert playwright_proxy("http://127.0.0.1:8080") == {
        "server": "http://127.0.0.1:8080",
        "bypass": "<-loopback>",
    }


@pytest.mark.slow
def test_chromium_through_the_proxy_is_shaped_on_loopback_too(
    upstream: Any, make_profile: Any
) -> None:
    from playwright.sync_api import sync_playwright

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--headless=new",
    ]
    with ShapedProxy(make_profile(200, None, None)) as proxy, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", args=args, proxy=playwright_proxy(proxy.url)
        )
        try:
            page = browser.new_page()
            took = page.evaluate(
                """async (url) => {
                    const start = performance.now();
                    await fetch(url, {mode: 'no-cors', cache: 'no-store'});
                    return (performance.now() - start) / 1000;
                }""",
                f"{upstream.base}/bytes?n=10",
            )
        finally:
            browser.close()
        urls = [r.url for r in proxy.records()]
    assert f"{upstream.base}/bytes?n=***" in urls  # query values are not kept
    assert took >= 0.2
