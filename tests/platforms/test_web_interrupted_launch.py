"""A Ctrl-C while Chromium starts leaves no browser and no event loop behind, and prints
nothing of Playwright's."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
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


# A Ctrl-C (or a SIGTERM under sigterm_as_interrupt, as the CLI runs) that the process
# sends itself at a given moment of create(); then what is left, and a second create().
_INTERRUPTED_CREATE = r"""
import os, signal, sys, threading, time
import psutil
from devicelab.interrupts import sigterm_as_interrupt
from devicelab.models import Device
from devicelab.platforms.web import WebDevice

moment, signum = sys.argv[1], getattr(signal, sys.argv[2])
me = psutil.Process()

def alive():
    found = []
    for child in me.children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.append((child, " ".join(child.cmdline())))
        except psutil.Error:
            pass
    return found

def running(word):
    return any(word in cmdline for _, cmdline in alive())

if moment == "driver-starting":
    # From a thread, once Playwright's driver runs: its handshake with the driver is on.
    def send():
        while not running("run-driver"):
            time.sleep(0.002)
        os.kill(os.getpid(), signum)
    threading.Thread(target=send, daemon=True).start()
else:
    # Inside a step of Playwright's event loop (it reads the driver's messages), once
    # Chromium runs: the handler's KeyboardInterrupt would end that task.
    from playwright._impl.connection import Connection
    dispatch = Connection.dispatch
    sent = []
    def dispatch_and_signal(self, message):
        if not sent and running("chromium"):
            sent.append(True)
            os.kill(os.getpid(), signum)
        return dispatch(self, message)
    Connection.dispatch = dispatch_and_signal

device = Device(id="web", platform="web", model="Chromium", os="Debian 12")
with sigterm_as_interrupt():
    try:
        WebDevice(device, proxy_url=None).create()
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
deadline = time.monotonic() + 10
while alive() and time.monotonic() < deadline:
    time.sleep(0.1)
print("left:", [cmdline[:60] for _, cmdline in alive()])
signal.signal(signal.SIGTERM, signal.SIG_DFL)
with WebDevice(device, proxy_url=None) as web:
    web.open("about:blank")
    print("again:", web.evaluate("() => 6 * 7"))
"""


@pytest.mark.parametrize(
    ("moment", "signame"),
    [("driver-starting", "SIGINT"), ("driver-starting", "SIGTERM"), ("in-a-loop-step", "SIGINT")],
)
def test_an_interrupted_create_prints_nothing_and_leaves_nothing(moment: str, signame: str) -> None:
    # Cut while the driver started, it printed "Task exception was never retrieved" and
    # Playwright's traceback before devicelab's own message (a task of the cut start
    # failed as the driver stopped, and nobody read it). Landing inside a step of the
    # loop, it left the driver and Chromium running, and "Exception ignored" tracebacks.
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_CREATE, moment, signame],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == ["interrupted", "left: []", "again: 42"], (done.stdout, done.stderr)
    for noise in ("Traceback", "never retrieved", "Exception ignored", "Error"):
        assert noise not in done.stderr, done.stderr
