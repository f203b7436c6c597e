"""The benches leave nothing behind and time what they say: realtime.py drops its scratch
database when seeding fails or is interrupted; cli_startup.py times this checkout's
devicelab, not PATH's; shaping.py's Chromium leaves nothing in $TMPDIR when interrupted."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
ADMIN = os.environ.get("DEVICELAB_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as module ``bench_cleanup_<name>`` (its folder on sys.path)."""
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_cleanup_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def database_exists(name: str) -> bool:
    with psycopg.connect(f"{ADMIN} dbname=postgres", autocommit=True, connect_timeout=3) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return found is not None


@pytest.fixture
def seeded() -> Iterator[list[str]]:
    """The DSNs realtime.py seeded; any database among them still there is dropped."""
    try:
        with psycopg.connect(f"{ADMIN} dbname=postgres", connect_timeout=3):
            pass
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN!r}: {exc}".splitlines()[0])
    dsns: list[str] = []
    yield dsns
    with psycopg.connect(f"{ADMIN} dbname=postgres", autocommit=True) as conn:
        for dsn in dsns:
            name = dsn.rsplit("dbname=", 1)[1]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.mark.parametrize("failure", [RuntimeError("seed failed"), KeyboardInterrupt()])
def test_realtime_drops_its_scratch_database_when_seeding_fails(
    failure: BaseException, seeded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    realtime = load_bench("realtime")
    prefix = f"dl_bench_t{uuid.uuid4().hex[:6]}_"
    monkeypatch.setattr(realtime, "ADMIN", ADMIN)
    monkeypatch.setattr(realtime, "SCRATCH_PREFIX", prefix, raising=False)
    monkeypatch.setattr(sys, "argv", ["bench/realtime.py", "--loop", "asyncio", "--users", "3"])

    def failing_seed(dsn: str, users: int) -> None:
        seeded.append(dsn)
        with psycopg.connect(dsn):  # it exists while seeding
            pass
        raise failure

    monkeypatch.setattr(realtime, "seed", failing_seed)
    cli = importlib.import_module("_cli")  # bench/_cli.py, as the script runs it
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises((type(failure), SystemExit)) as raised:
            cli.run("realtime", realtime.main)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(seeded) == 1
    name = seeded[0].rsplit("dbname=", 1)[1]
    assert not database_exists(name)
    assert name.startswith(prefix)
    if isinstance(failure, KeyboardInterrupt):
        assert raised.value.args == (130,)  # one line and 130, not a traceback


def test_cli_startup_times_this_checkouts_devicelab(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fake = tmp_path / "bin" / "devicelab"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    done = subprocess.run(
        [sys.executable, str(BENCH / "cli_startup.py"), "--runs", "1"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"},
    )  # fmt: skip
    assert not marker.exists(), "timed the devicelab first on PATH"
    assert done.returncode in (0, 1), done.stderr
    timed = Path(sys.executable).parent / "devicelab"
    assert done.stdout.splitlines()[0] == f"timing {timed}"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no /usr/bin/chromium")
def test_shaping_interrupted_in_cdp_leaves_nothing_in_tmpdir(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = (
        # Python leaves SIGINT ignored when its parent did (a background job): not here.
        "import asyncio, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        "import shaping\n"
        "from devicelab.config import network_profile\n"
        "async def go():\n"
        "    runner, base = await shaping.start_server()\n"
        "    try:\n"
        "        await shaping.cdp(base, network_profile('slow-3g'), [5_000_000])\n"
        "    finally:\n"
        "        await runner.cleanup()\n"
        "asyncio.run(go())\n"
    )
    # Ctrl-C in a terminal: SIGINT to the whole group, Chromium and Playwright's driver too.
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, "TMPDIR": str(scratch)},
        start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not any(scratch.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # Chromium is up and fetching
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        time.sleep(0.5)
        assert list(scratch.iterdir()) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(scratch, ignore_errors=True)
