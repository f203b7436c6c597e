"""ReferenceServer used from a long-lived program: a bad DSN, a second start."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from backend_checks.reference.server import ReferenceServer
from devicelab.errors import DeviceLabError


@pytest.mark.parametrize(
    "dsn", ["postgres:s3cretPW@127.0.0.1/db", "postgresql//u:s3cretPW@127.0.0.1:1/db"]
)
def test_a_mistyped_dsn_fails_at_once_without_its_password(
    dsn: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # The pool retried it for 15 s and its warnings quoted the DSN, password and all,
    # about 19 times on stderr.
    started = time.monotonic()
    with pytest.raises(DeviceLabError) as caught:
        ReferenceServer(dsn).start()
    assert time.monotonic() - started < 5
    out, err = capfd.readouterr()
    for text in (caught.value.one_line(), out, err, caplog.text):
        assert "s3cretPW" not in text


def test_a_second_start_is_refused_and_the_server_still_stops(scratch_dsn: str) -> None:
    # The second start orphaned the first server: stop() returned, and it went on
    # listening, with nothing left to stop it.
    server = ReferenceServer(scratch_dsn).start()
    url = server.url
    try:
        with pytest.raises(RuntimeError, match="running already"):
            server.start()
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/rest/v1/", timeout=2)


def test_a_server_built_but_never_started_leaves_no_directory(
    scratch_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's own /tmp

    def storage_dirs() -> set[Path]:
        return set(tmp_path.glob("devicelab-storage-*"))

    before = storage_dirs()
    servers = [ReferenceServer(scratch_dsn) for _ in range(3)]
    assert storage_dirs() == before, servers
    server = servers[0].start()
    try:
        assert server.ctx.storage_root.is_dir()
    finally:
        server.stop()
    assert storage_dirs() == before
