"""A script of the Python API (a farm script under systemd) stopped by SIGTERM inside
``Lab(...).session(...)``: with ``from devicelab import sigterm_as_interrupt`` around it,
as docs/device_run.md shows, the session is torn down and the phone (the fake phone
behind the real adb server) put back before the process exits 143."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devicelab.journal import Journal
from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.fake_adbd import FakeAdbd

#: The example of docs/device_run.md ("From Python"), with the inventory and out folder
#: from the command line.
SCRIPT = """
import sys, time
from pathlib import Path

from devicelab import sigterm_as_interrupt
from devicelab.lab import Lab

with sigterm_as_interrupt() as stopped:
    try:
        lab = Lab("phone", "none", inventory=Path(sys.argv[1]))
        with lab.session(Path(sys.argv[2])) as session:
            print("up", flush=True)
            while True:
                session.measure("conversation_list_load", query_count=2)
    except KeyboardInterrupt:
        sys.exit(128 + stopped[0] if stopped else 130)
"""


@pytest.mark.slow
def test_sigterm_tears_a_python_api_session_down_and_puts_the_phone_back(
    adb: PrivateAdbServer, phone: FakeAdbd, phone_inventory: Path, tmp_path: Path
) -> None:
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(phone_inventory), str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=adb.env,
    )  # fmt: skip
    try:
        assert script.stdout is not None
        assert script.stdout.readline() == "up\n", script.stderr and script.stderr.read()
        assert phone.reverses, "the session routes the phone"
        script.send_signal(signal.SIGTERM)
        _out, err = script.communicate(timeout=120)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    assert script.returncode == 128 + signal.SIGTERM, err
    assert phone.reverses == {}, "adb reverse left behind"
    assert phone.settings["global"].get("http_proxy") == ":0", "http_proxy left set"
    assert Journal(Path(adb.env["DEVICELAB_STATE"]) / "journal.jsonl").pending() == []
