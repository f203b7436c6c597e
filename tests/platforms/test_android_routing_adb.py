"""Android routing end to end: adbutils → the real adb server → the fake device (adbd).

Nothing here passes without the real adb server: the fake is reached only through it.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devicelab.journal import Journal
from devicelab.platforms.routing import HTTP_PROXY_KIND, REVERSE_KIND, AndroidRoute, android_undoers
from devicelab.testing.fake_adbd import FakeAdbd, ShellResult


def test_adbutils_shell_v1_and_v2_and_reverse_through_the_real_adb_server(
    device: Any, fake: FakeAdbd
) -> None:
    assert device.shell("getprop ro.product.model") == "Pixel 6"
    assert "temperature: 291" in device.shell("dumpsys battery")
    assert "TOTAL PSS:" in device.shell("dumpsys meminfo com.example.app")
    assert device.shell("dumpsys meminfo com.absent") == "No process found for: com.absent"

    missing = device.shell2("frobnicate --now", v2=True)  # shell protocol v2
    assert (missing.returncode, missing.stdout) == (127, "")
    assert "not found" in missing.stderr
    chained = device.shell2("echo one; false")  # legacy shell, exit code via `echo $?`
    assert (chained.returncode, chained.output) == (1, "one\n")

    fake.on("pm path", lambda cmd: ShellResult("package:/data/app/base.apk\n"))
    fake.on("am crash", lambda cmd: ShellResult("", "boom\n", 3))
    assert device.shell("pm path com.example.app") == "package:/data/app/base.apk"
    # Over the 256 KiB payload maximum: several WRTEs, each waiting for the server's OKAY.
    fake.on("cat /big", lambda cmd: "x" * 700_000)
    assert len(device.shell("cat /big")) == 700_000
    assert len(device.shell2("cat /big", v2=True).stdout) == 700_000
    crashed = device.shell2("am crash x", v2=True)
    assert (crashed.returncode, crashed.stderr) == (3, "boom\n")

    device.reverse("tcp:9000", "tcp:9001")
    assert fake.reverses == {"tcp:9000": "tcp:9001"}
    assert [(r.remote, r.local) for r in device.reverse_list()] == [("tcp:9000", "tcp:9001")]
    device.reverse_remove("tcp:9000")
    assert fake.reverses == {} and device.reverse_list() == []

    # Both shell protocols really went over the wire.
    assert any(s.startswith("shell,v2") for s in fake.services)
    assert any(s.startswith("shell:") for s in fake.services)


def test_the_adb_command_line_sees_the_fake_as_a_device(adb_server: Any, fake: FakeAdbd) -> None:
    shell = adb_server.run("-s", fake.serial, "shell", "missing-tool", check=False)
    assert shell.returncode == 127 and "not found" in shell.stderr
    adb_server.run("-s", fake.serial, "reverse", "tcp:7001", "tcp:7002")
    assert "tcp:7001 tcp:7002" in adb_server.run("-s", fake.serial, "reverse", "--list").stdout
    failed = adb_server.run("-s", fake.serial, "reverse", "--remove", "tcp:1", check=False)
    assert failed.returncode != 0 and "not found" in failed.stderr
    adb_server.run("-s", fake.serial, "reverse", "--remove-all")
    assert fake.reverses == {}


def test_android_route_through_real_adb_is_undone_on_exit(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    with AndroidRoute(device, 8080, journal):
        assert fake.settings["global"]["http_proxy"] == "127.0.0.1:8080"
        assert fake.reverses == {"tcp:8080": "tcp:8080"}
        assert {e.kind for e in journal.pending()} == {HTTP_PROXY_KIND, REVERSE_KIND}
    assert fake.settings["global"]["http_proxy"] == ":0"  # cleared without a reboot
    assert fake.reverses == {} and device.reverse_list() == []
    assert journal.pending() == []

    fake.settings["global"]["http_proxy"] = "10.0.0.2:3128"  # the user's own proxy
    with pytest.raises(KeyboardInterrupt), AndroidRoute(device, 8081, journal):
        assert fake.reverses == {"tcp:8081": "tcp:8081"}
        raise KeyboardInterrupt
    assert fake.settings["global"]["http_proxy"] == "10.0.0.2:3128"
    assert fake.reverses == {}


_ROUTE_AND_HANG = """
import sys, time, adbutils
from devicelab.journal import Journal
from devicelab.platforms.routing import AndroidRoute
port, serial, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
device = adbutils.AdbClient(host="127.0.0.1", port=port).device(serial)
AndroidRoute(device, 8082, Journal(path)).apply()
print("applied", flush=True)
time.sleep(60)
"""


def test_a_route_killed_mid_run_is_undone_at_the_next_start(
    adb_server: Any, device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    path = tmp_path / "journal.jsonl"
    args = [sys.executable, "-c", _ROUTE_AND_HANG, str(adb_server.port), fake.serial, str(path)]
    run = subprocess.Popen(args, env=adb_server.env, stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        ready, _, _ = select.select([run.stdout], [], [], 20)
        assert ready and run.stdout.readline().strip() == "applied"
    finally:
        os.kill(run.pid, signal.SIGKILL)  # no cleanup of any kind runs
        run.wait(timeout=10)
    assert run.returncode == -signal.SIGKILL
    assert fake.settings["global"]["http_proxy"] == "127.0.0.1:8082"
    assert fake.reverses == {"tcp:8082": "tcp:8082"}

    started = time.monotonic()
    with Journal(path, android_undoers(lambda serial: device)) as journal:
        assert fake.settings["global"]["http_proxy"] == ":0"
        assert fake.reverses == {}
        assert journal.pending() == []
    assert time.monotonic() - started < 10
