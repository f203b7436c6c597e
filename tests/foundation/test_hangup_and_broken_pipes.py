"""A closed terminal (SIGHUP, then EIO on every write) and a reader that went away (EPIPE):
the command still restores what it changed and ends with the exit code it decided."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devicelab.interrupts import sigterm_as_interrupt
from devicelab.journal import HeldInterrupt, held_interrupts
from devicelab.teardown import Teardown

ROOT = Path(__file__).resolve().parents[2]
DEVICELAB = [sys.executable, "-m", "devicelab"]


@pytest.mark.parametrize("error", [BrokenPipeError(errno.EPIPE, "pipe"), OSError(errno.EIO, "io")])
def test_teardown_goes_on_when_saying_fails(error: OSError) -> None:
    # The warning of a failed step raised out of run(): the steps after it never ran, and
    # the phone stayed routed through a proxy that was gone.
    done: list[str] = []

    def say(text: str) -> None:
        raise error

    def broken() -> None:
        raise RuntimeError("session gone")

    def interrupted() -> None:
        raise KeyboardInterrupt

    teardown = Teardown(say)
    teardown.push("android device (route and settings)", lambda: done.append("phone"))
    teardown.push("proxy", interrupted)
    teardown.push("backend", lambda: done.append("backend"))
    teardown.push("app session", broken)
    with pytest.raises(KeyboardInterrupt):  # the Ctrl-C still ends the command, after all
        teardown.run()
    assert done == ["backend", "phone"]


def _closed_pipe() -> int:
    """The write end of a pipe nobody reads (EPIPE on every write)."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize("closed", ["stderr", "stdout"])
def test_a_closed_stderr_or_stdout_keeps_the_exit_code(tmp_path: Path, closed: str) -> None:
    # The one-line error (and the help) raised BrokenPipeError: exit 1, not 2 (or 0).
    bad = tmp_path / "inventory.yaml"
    bad.write_text("devices:\n  web:\n    platform: web\n    model: C\n    os: D\n    colr: x\n")
    args, code = (
        (["devices", "--inventory", str(bad)], 2) if closed == "stderr" else (["--help"], 0)
    )
    pipe = _closed_pipe()
    try:
        done = subprocess.run(
            [*DEVICELAB, *args],
            stdout=pipe if closed == "stdout" else subprocess.PIPE,
            stderr=pipe if closed == "stderr" else subprocess.PIPE,
            cwd=ROOT, timeout=60, check=False, text=True,
        )  # fmt: skip
    finally:
        os.close(pipe)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert not (done.stdout or done.stderr), (done.stdout, done.stderr)


@pytest.mark.parametrize(("full", "args", "code"), [
    ("stdout", ["--help"], 3),  # its output lost: not a success
    ("stdout", ["--version"], 3),
    ("stderr", ["run", "--device", "nosuch"], 2),  # bad input stays bad input
])  # fmt: skip
def test_an_unwritable_stdout_or_stderr_is_one_line_not_a_traceback(
    full: str, args: list[str], code: int
) -> None:
    """``> /dev/full`` (a full disk): the OSError came out as a traceback with exit 1,
    even after the command had done its work (`backend stop` stopped the cluster)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with Path("/dev/full").open("w") as sink:
        done = subprocess.run(
            [*DEVICELAB, *args],
            stdout=sink if full == "stdout" else subprocess.PIPE,
            stderr=sink if full == "stderr" else subprocess.PIPE,
            cwd=ROOT, timeout=60, check=False, text=True,
        )  # fmt: skip
    assert done.returncode == code, (done.stdout, done.stderr)
    if full == "stdout":
        assert done.stderr == (
            "devicelab: error: stdout: cannot write what the command printed (No space left"
            " on device) (hint: free some space, or send the output elsewhere)\n"
        )
    else:
        assert done.stdout == ""


@pytest.fixture
def silent_port() -> Iterator[socket.socket]:
    """A "database" that accepts and never answers: `backend check` waits on it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(0.5)
        yield silent


def _blocked_check(
    silent: socket.socket, out: int, err: int
) -> tuple[subprocess.Popen[str], socket.socket]:
    """`devicelab backend check` started and waiting on ``silent``; its connection (to
    close once it ended: closed before, the check would end on its own)."""
    port = silent.getsockname()[1]
    dsn = f"postgresql://app@127.0.0.1:{port}/none?connect_timeout=30"
    proc = subprocess.Popen(
        [*DEVICELAB, "backend", "check", "--dsn", dsn],
        stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        cwd=ROOT, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            peer, _ = silent.accept()
        except TimeoutError:
            continue
        time.sleep(0.3)
        return proc, peer
    proc.kill()
    raise AssertionError("devicelab backend check never connected")


def test_sighup_stops_a_command_like_sigterm_with_129(silent_port: socket.socket) -> None:
    # SIGHUP (a closed terminal, a dropped ssh) killed devicelab on the spot: no finally ran.
    proc, peer = _blocked_check(silent_port, subprocess.PIPE, subprocess.PIPE)
    with peer:
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 129, (out, err)
    assert err.strip().splitlines() == ["devicelab: hung up (SIGHUP)"]


def test_a_hung_up_terminal_still_ends_129(silent_port: socket.socket) -> None:
    # The terminal is gone: every write to it fails with EIO, the line that says why too.
    master, slave = os.openpty()
    try:
        proc, peer = _blocked_check(silent_port, slave, slave)
    finally:
        os.close(slave)
    with peer:
        os.close(master)  # the terminal closes: writes to it now fail with EIO
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=30) == 129


def _restore(steps: list[str], signum: int) -> KeyboardInterrupt | None:
    """Put a "device" back in two steps under held_interrupts, ``signum`` sent during the
    first; returns the interrupt raised (caught: a plain KeyboardInterrupt would end the
    test session as a Ctrl-C does)."""
    try:
        with held_interrupts():
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
            steps.append("route")
            time.sleep(0.01)
            steps.append("settings")
    except KeyboardInterrupt as exc:
        return exc
    return None


def test_the_held_note_to_a_closed_stderr_does_not_cut_the_restore() -> None:
    # The note "putting the device back first" went to a closed stderr from the signal
    # handler: its EPIPE was raised in the middle of the restore it was meant to shield.
    saved, pipe = os.dup(2), _closed_pipe()
    steps: list[str] = []
    try:
        os.dup2(pipe, 2)
        raised = _restore(steps, signal.SIGINT)
    except OSError as exc:
        raised = None
        pytest.fail(f"the restore was cut: {exc!r}")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(pipe)
    assert steps == ["route", "settings"]
    assert isinstance(raised, HeldInterrupt)


def test_sighup_is_held_while_a_device_is_put_back_then_stops_once() -> None:
    # SIGHUP was not held: it cut the restore straight away (or killed the process).
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # not ignored (nohup) here
    steps: list[str] = []
    try:
        with sigterm_as_interrupt() as stopped:
            assert signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL  # or it kills pytest
            raised = _restore(steps, signal.SIGHUP)
            assert steps == ["route", "settings"]
            assert isinstance(raised, HeldInterrupt)
            assert stopped == [signal.SIGHUP]
            # Once stopping, a second hang-up (or a SIGTERM) lets the unwinding finish.
            for again in (signal.SIGHUP, signal.SIGTERM):
                os.kill(os.getpid(), again)
            time.sleep(0.05)
            steps.append("after")
    finally:
        signal.signal(signal.SIGHUP, hangup)
    assert steps == ["route", "settings", "after"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # After the block SIGTERM is the default again: left ignored, every later command of
    # this process (the farm and plugin tests' too) ignored it and never stopped.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sighup_left_ignored_under_nohup() -> None:
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)
