"""The ``devicelab_lab`` fixture on an Android phone (the fake phone behind the real adb
server, a real Appium with the Chromium stand-in for the WebView): a phone that cannot be
put back at the end of the pytest session (its settings service broke, as when it goes
away) is an ERROR at teardown in devicelab's one line, not a traceback through the lab;
the changes stay pending and the next start puts them back."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicelab import lab_phone
from devicelab.journal import Journal
from devicelab.lab import Lab
from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import FakeAdbd, ShellResult

pytest_plugins = ["pytester"]

SUITE = """
def test_search(devicelab_lab):
    assert devicelab_lab.measure("message_search").status in ("pass", "fail")
"""


@pytest.mark.slow
def test_a_phone_left_changed_is_a_one_line_error_at_teardown(
    pytester: pytest.Pytester,
    adb: PrivateAdbServer,
    phone: FakeAdbd,
    phone_inventory: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = ShellResult("", "cmd: Failure calling service settings: Broken pipe (32)\n", 255)
    restores = ("settings put global http_proxy :0", "settings delete global stay_on")
    for prefix in restores:
        phone.on(prefix, lambda _command: broken)
    for key in ("DEVICELAB_STATE", "ANDROID_ADB_SERVER_PORT", "HOME", "ADBUTILS_ADB_PATH"):
        monkeypatch.setenv(key, adb.env[key])
    pytester.makepyfile(test_suite=SUITE)
    try:
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--devicelab-device", "phone",
            "--devicelab-inventory", str(phone_inventory), timeout=300,
        )  # fmt: skip
    finally:
        for prefix in restores:
            phone.off(prefix)
    output = result.stdout.str()
    assert result.ret == 1, output
    result.assert_outcomes(passed=1, errors=1)
    assert f"devicelab: {phone.serial} was left changed: http_proxy 127.0.0.1:" in output, output
    assert "raise left" not in output and "lab.py:" not in output, output

    lab = Lab("phone", "none", inventory=phone_inventory)
    lab_phone.attach(lab.device, lab.say).close()  # the next start puts the phone back
    assert phone.settings["global"].get("http_proxy") == ":0"
    assert Journal(Path(adb.env["DEVICELAB_STATE"]) / "journal.jsonl").pending() == []
