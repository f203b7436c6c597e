"""`devicelab doctor` probes usbmuxd where pymobiledevice3 would reach it: a set
USBMUXD_SOCKET_ADDRESS (or a socket file) with nothing behind it is reported missing, with
the fix, as `devicelab devices` says at the same moment."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicelab.doctor import Finding, diagnose
from devicelab.testing.fake_usbmuxd import FakeUsbmuxd


def _usbmuxd() -> Finding:
    (found,) = [f for f in diagnose() if f.name == "usbmuxd"]
    return found


def test_usbmuxd_is_found_only_while_it_answers_on_its_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeUsbmuxd() as mux:
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", mux.address)
        answering = _usbmuxd()
    stopped = _usbmuxd()
    assert answering.found
    assert not stopped.found, stopped
    assert answering.detail == f"{mux.address} answers"
    assert stopped.detail == f"{mux.address}: nothing listens there"
    assert "apt-get install -y usbmuxd" in stopped.fix


def test_a_socket_file_with_no_usbmuxd_behind_it_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeUsbmuxd(path=tmp_path / "usbmuxd") as mux:
        monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", mux.address)
        assert _usbmuxd().found
    (tmp_path / "stale").touch()  # a file left where the socket was
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", str(tmp_path / "stale"))
    assert _usbmuxd().detail == f"{tmp_path / 'stale'}: nothing listens there"
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", str(tmp_path / "absent"))
    assert _usbmuxd().detail == f"{tmp_path / 'absent'}: no such socket"
