"""``backend serve`` keeps its JWT secret owner-only and says so when it listens on the
network (the test users' password and the keys' making are public)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

#: A database nothing answers at: serve stops at it, after the checks under test.
_NOWHERE = "postgresql://fj_nobody@127.0.0.1:1/fj_none?connect_timeout=2"
_SECRET = "s" * 40


def _serve(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicelab", "backend", "serve", "--dsn", _NOWHERE, *args],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DEVICELAB_STATE": str(state)},
    )  # fmt: skip


def _secret_file(state: Path, mode: int) -> Path:
    path = state / "reference" / "jwt_secret"
    path.parent.mkdir(parents=True)
    path.write_text(_SECRET + "\n")
    path.chmod(mode)
    return path


def test_a_readable_secret_of_ours_is_made_owner_only(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, 0o644)
    _serve(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == _SECRET  # the same secret: the same keys


def test_a_readable_secret_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("only root can give a file to another user")
    path = _secret_file(tmp_path, 0o644)
    os.chown(path, 65534, 65534)
    done = _serve(tmp_path)
    assert done.returncode == 3, done.stderr
    assert "readable by others" in done.stderr and "chmod 600" in done.stderr
    assert _SECRET not in done.stderr + done.stdout


def test_listening_on_every_interface_warns_once(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--host", "0.0.0.0")
    assert done.stderr.count("open to the network") == 1, done.stderr
    assert "0.0.0.0" in done.stderr


def test_loopback_does_not_warn(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        done = _serve(tmp_path, "--host", host)
        assert "open to the network" not in done.stderr, (host, done.stderr)


def test_reading_the_secret_tightens_its_file(tmp_path: Path) -> None:
    from backend_checks.reference.serve import _jwt_secret

    path = _secret_file(tmp_path, 0o640)
    assert _jwt_secret(path) == _SECRET
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


_MAKE_SECRET = """
import sys, time
from pathlib import Path
from backend_checks.reference.serve import _jwt_secret
path, start = Path(sys.argv[1]), float(sys.argv[2])
while time.time() < start:
    pass
print(_jwt_secret(path))
"""


def test_serves_starting_together_on_a_fresh_folder_make_one_secret(tmp_path: Path) -> None:
    # Each made its own and the file kept the last: the keys the others printed (pasted
    # into .env files) stopped working at their next start.
    import subprocess
    import sys
    import time

    path = tmp_path / "state" / "jwt_secret"
    start = time.time() + 2.0  # after every interpreter has started
    command = [sys.executable, "-c", _MAKE_SECRET, str(path), str(start)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(6)]
    secrets = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert secrets == {path.read_text().strip()}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["jwt_secret"]  # nothing left aside
