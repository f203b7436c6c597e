"""Android routing when things go wrong (an outside tester's findings), end to end:
adbutils → the real adb server → the fake device (adbd), the journal on disk.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import BadInput, EnvironmentProblem, ProbeFailed
from devicelab.journal import Journal
from devicelab.platforms.routing import HTTP_PROXY_KIND, REVERSE_KIND, AndroidRoute, android_undoers
from devicelab.testing.fake_adbd import FakeAdbd, ShellResult
from tests.platforms.test_android_routing_adb import _ROUTE_AND_HANG

CORPORATE = "proxy.corp.example:3128"


def _journal_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_second_run_may_not_route_a_phone_another_live_run_routes(
    adb_server: Any, device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    path = tmp_path / "journal.jsonl"
    fake.settings["global"]["http_proxy"] = CORPORATE
    args = [sys.executable, "-c", _ROUTE_AND_HANG, str(adb_server.port), fake.serial, str(path)]
    other = subprocess.Popen(args, env=adb_server.env, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        ready, _, _ = select.select([other.stdout], [], [], 20)
        assert ready and other.stdout.readline().strip() == "applied"
        with pytest.raises(EnvironmentProblem, match=f"pid {other.pid}") as refused:
            AndroidRoute(device, 8083, Journal(path)).apply()
        assert "already routed" in refused.value.one_line() and refused.value.hint
        # Nothing was read as "previous", nothing changed: the other run's route stands.
        assert fake.reverses == {"tcp:8082": "tcp:8082"}
        assert fake.settings["global"]["http_proxy"] == "127.0.0.1:8082"
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait(timeout=10)
    # The kernel let the claim go with the process: the next run recovers and routes.
    with Journal(path, android_undoers(lambda serial: device)) as journal:
        assert fake.settings["global"]["http_proxy"] == CORPORATE
        with AndroidRoute(device, 8083, journal):
            assert fake.reverses == {"tcp:8083": "tcp:8083"}
    assert fake.settings["global"]["http_proxy"] == CORPORATE and fake.reverses == {}


def test_two_routes_in_one_process_overlapping_never_restore_each_other(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    fake.settings["global"]["http_proxy"] = CORPORATE
    first = AndroidRoute(device, 8080, Journal(tmp_path / "journal.jsonl")).apply()
    with pytest.raises(EnvironmentProblem, match=f"pid {os.getpid()}"):
        AndroidRoute(device, 8081, Journal(tmp_path / "journal.jsonl")).apply()
    first.undo()
    assert fake.settings["global"]["http_proxy"] == CORPORATE and fake.reverses == {}
    AndroidRoute(device, 8081, Journal(tmp_path / "journal.jsonl")).apply().undo()


def test_a_torn_last_line_does_not_swallow_the_next_runs_first_change(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"op": "change", "kind": "android.http_pro')  # a crash mid-write
    journal = Journal(path)
    route = AndroidRoute(device, 8080, journal).apply()
    assert [e.kind for e in Journal(path).pending()] == [REVERSE_KIND, HTTP_PROXY_KIND]
    route.undo()
    assert Journal(path).pending() == [] and fake.reverses == {}


def test_a_corrupt_journal_is_read_around_and_the_readable_change_undone(
    device: Any, fake: FakeAdbd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.jsonl"
    # Our pid with another start time: a crashed run's.
    crashed = {"op": "change", "kind": HTTP_PROXY_KIND, "target": fake.serial, "id": "c1",
               "data": {"previous": CORPORATE}, "at": time.time() - 60, "pid": os.getpid(),
               "started": 1.0}  # fmt: skip
    lines = [
        b"\xff\xfe\n",
        b"[1, 2]\n",
        b'{"op": "change", "kind": "android.reverse", "id": "x", "pid": 1, "at": 1}\n',
        b'{"op": "change", "kind": 7, "target": "t", "id": "y", "pid": 1, "at": 1, "data": {}}\n',
        json.dumps(crashed).encode() + b"\n",
    ]
    path.write_bytes(b"".join(lines))
    fake.settings["global"]["http_proxy"] = "127.0.0.1:8080"  # what the crashed run left
    undoers = android_undoers(lambda serial: device)
    with caplog.at_level(logging.WARNING, "devicelab.journal"), Journal(path, undoers) as journal:
        assert journal.pending() == []
    assert fake.settings["global"]["http_proxy"] == CORPORATE
    assert "skipped unreadable line(s) [1, 2, 3, 4]" in caplog.text


def test_a_state_folder_that_cannot_be_made_is_one_line_and_nothing_changes(
    device: Any, fake: FakeAdbd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DEVICELAB_STATE", str(tmp_path / "file" / "state"))
    with pytest.raises(EnvironmentProblem) as caught:
        AndroidRoute(device, 8080, Journal()).apply()
    assert caught.value.exit_code == 3 and "DEVICELAB_STATE" in caught.value.hint
    assert "\n" not in caught.value.one_line()
    assert fake.reverses == {} and "http_proxy" not in fake.settings["global"]


def test_a_reverse_that_adbd_dropped_counts_as_undone(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    route = AndroidRoute(device, 8090, journal).apply()
    fake.reverses.clear()  # the phone was replugged: adbd's listeners are gone
    route.undo()
    assert journal.pending() == [] and fake.settings["global"]["http_proxy"] == ":0"


def test_a_reused_pid_is_another_process_and_its_change_is_undone(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    path = tmp_path / "journal.jsonl"
    base = {"op": "change", "kind": HTTP_PROXY_KIND, "target": fake.serial, "pid": os.getpid()}
    # Our pid, but a process that started long before this one: a crashed run's pid reused.
    reused = {**base, "id": "reused", "data": {"previous": CORPORATE}, "at": 1.0, "started": 1.0}
    # A line of an older devicelab (no start time) by this very process, recorded now.
    live_old_format = {**base, "id": "live", "data": {"previous": "x:1"}, "at": time.time()}
    path.write_text(json.dumps(reused) + "\n" + json.dumps(live_old_format) + "\n")
    fake.settings["global"]["http_proxy"] = "127.0.0.1:8080"
    journal = Journal(path, android_undoers(lambda serial: device))
    journal.recover()
    assert fake.settings["global"]["http_proxy"] == CORPORATE
    assert [e.id for e in journal.pending()] == ["live"]
    entry = journal.record(HTTP_PROXY_KIND, fake.serial, {"previous": CORPORATE})
    assert entry.started is not None and _journal_lines(path)[-1]["started"] == entry.started


def test_ctrl_c_inside_with_android_route_undoes_the_half_made_route(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    fake.settings["global"]["http_proxy"] = CORPORATE

    def interrupted(command: str) -> ShellResult:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the setting is being made
        time.sleep(0.5)
        return ShellResult()

    fake.on("settings put global http_proxy 127.0.0.1", interrupted)
    journal = Journal(tmp_path / "journal.jsonl")
    with pytest.raises(KeyboardInterrupt), AndroidRoute(device, 8080, journal):
        pytest.fail("the body ran")
    fake.off("settings put global http_proxy 127.0.0.1")
    assert fake.reverses == {} and fake.settings["global"]["http_proxy"] == CORPORATE
    assert journal.pending() == []


def test_a_refused_settings_put_fails_the_route_and_leaves_the_phone_as_it_was(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    fake.settings["global"]["http_proxy"] = CORPORATE
    denial = "java.lang.SecurityException: Permission Denial: not allowed to write\n"
    fake.on("settings put global http_proxy 127.0.0.1", lambda c: ShellResult("", denial, 1))
    journal = Journal(tmp_path / "journal.jsonl")
    with pytest.raises(ProbeFailed, match="exit 1") as caught, AndroidRoute(device, 80, journal):
        pytest.fail("the body ran")
    assert caught.value.exit_code == 3 and "\n" not in caught.value.one_line()
    assert fake.reverses == {} and fake.settings["global"]["http_proxy"] == CORPORATE
    assert journal.pending() == []


def test_a_failed_settings_get_is_never_journaled_as_the_previous_value(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    broken = "cmd: Failure calling service settings: Broken pipe (32)\n"
    fake.on("settings get global http_proxy", lambda c: ShellResult(broken, "", 255))
    path = tmp_path / "journal.jsonl"
    with pytest.raises(ProbeFailed, match="Broken pipe"):
        AndroidRoute(device, 8080, Journal(path)).apply()
    assert not path.exists() or Journal(path).pending() == []
    assert fake.reverses == {} and "http_proxy" not in fake.settings["global"]


def test_a_previous_value_goes_back_to_the_device_shell_quoted(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    odd = "host name;reboot"  # a shell would split it and run `reboot`
    fake.settings["global"]["http_proxy"] = odd
    with AndroidRoute(device, 8080, Journal(tmp_path / "journal.jsonl")):
        pass
    assert fake.settings["global"]["http_proxy"] == odd


@pytest.mark.parametrize("port", [0, -1, 70000, "8080; reboot", True, 8080.0])
def test_a_port_that_is_not_a_tcp_port_is_bad_input(
    device: Any, fake: FakeAdbd, tmp_path: Path, port: Any
) -> None:
    with pytest.raises(BadInput, match="not a TCP port") as caught:
        AndroidRoute(device, port, Journal(tmp_path / "journal.jsonl")).apply()
    assert caught.value.exit_code == 2 and "65535" in caught.value.hint
    assert fake.reverses == {} and "http_proxy" not in fake.settings["global"]


def test_the_users_own_reverse_of_the_port_is_put_back(
    device: Any, fake: FakeAdbd, tmp_path: Path
) -> None:
    device.reverse("tcp:8080", "tcp:9999")
    with AndroidRoute(device, 8080, Journal(tmp_path / "journal.jsonl")):
        assert fake.reverses == {"tcp:8080": "tcp:8080"}
    assert fake.reverses == {"tcp:8080": "tcp:9999"}


def test_a_failed_undo_says_the_changes_stay_pending_and_keeps_the_phone(
    device: Any, fake: FakeAdbd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.jsonl"
    route = AndroidRoute(device, 8080, Journal(path)).apply()
    fake.on("settings put global http_proxy :0", lambda c: ShellResult("", "Broken pipe\n", 1))
    with caplog.at_level(logging.WARNING, logger="devicelab.journal"):
        route.undo()
    assert f"changes on {fake.serial} stay pending" in caplog.text
    assert "next devicelab run on that device" in caplog.text
    assert [e.kind for e in Journal(path).pending()] == [HTTP_PROXY_KIND]
    with pytest.raises(EnvironmentProblem, match="already routed"):
        AndroidRoute(device, 8081, Journal(path)).apply()
    fake.off("settings put global http_proxy :0")
    route.undo()  # a second try undoes what is left and lets the phone go
    assert Journal(path).pending() == [] and fake.settings["global"]["http_proxy"] == ":0"
    AndroidRoute(device, 8081, Journal(path)).apply().undo()


class _Shell:
    """A phone's shell that records commands and answers with ``returncode``."""

    serial = "R5CT1"

    def __init__(self, returncode: int = 0, output: str = "") -> None:
        self.commands: list[str] = []
        self.returncode, self.output = returncode, output

    def shell2(self, cmd: str, *, v2: bool = False) -> Any:
        from types import SimpleNamespace

        self.commands.append(cmd)
        return SimpleNamespace(returncode=self.returncode, output=self.output)


def test_the_screen_setting_is_restored_through_the_same_checked_shell(tmp_path: Path) -> None:
    # AndroidDevice had a shell of its own: a failed `settings get` was kept as the value to
    # restore, and the restore went to the device shell unquoted.
    from devicelab.journal import Entry
    from devicelab.platforms.android_device import SETTING_KIND, device_undoers

    phone = _Shell()
    undo = device_undoers(lambda _serial: phone)[SETTING_KIND]
    data = {"namespace": "global", "key": "stay_on_while_plugged_in", "previous": "3; reboot"}
    undo(Entry(kind=SETTING_KIND, target=phone.serial, data=data))
    assert phone.commands == ["settings put global stay_on_while_plugged_in '3; reboot'"]
    broken = _Shell(returncode=255, output="cmd: Failure calling service settings")
    with pytest.raises(ProbeFailed, match="exit 255"):
        device_undoers(lambda _serial: broken)[SETTING_KIND](
            Entry(kind=SETTING_KIND, target=phone.serial, data=data)
        )
