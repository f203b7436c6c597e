"""A battery unplug the phone's going away left pending is named in words in the line on
what a run left changed, like the other changes ("http_proxy ... (was unset)")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from devicelab.journal import Journal
from devicelab.samplers import SampleLog
from devicelab.samplers.android import UNDOERS, AndroidSampler, BatteryUnplugged
from devicelab.teardown import left_changed
from devicelab.testing.adb_server import PrivateAdbServer


def test_a_pending_unplug_is_said_in_words(
    adb_server: PrivateAdbServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adbutils

    monkeypatch.setenv("DEVICELAB_STATE", str(tmp_path / "state"))
    since = time.time()
    journal = Journal(undoers=UNDOERS)
    unplugged = None
    with adb_server.phone() as fake:
        device: Any = adbutils.AdbClient(port=adb_server.port).device(fake.serial)
        sampler = AndroidSampler(SampleLog(tmp_path / "s.jsonl"), device, "com.example.app")
        unplugged = BatteryUnplugged(sampler, journal).__enter__()
        assert fake.battery_unplugged
    unplugged.__exit__(None, None, None)  # the phone is gone: the reset stays pending
    left = left_changed(since)
    assert left is not None
    line = left.one_line()
    assert f"{fake.serial} was left changed: battery reported unplugged" in line, line
    assert "android.battery_unplug" not in line, line
