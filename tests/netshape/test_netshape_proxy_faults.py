"""ShapedProxy's start and its inputs, when something goes wrong (real mitmproxy): Ctrl-C
during start(), start() twice, a non-PEM upstream CA, an unusable confdir, a bad offline
duration, the subprocess's start error."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import BadInput, EnvironmentProblem
from devicelab.netshape import proxy as proxy_module
from devicelab.netshape.proxy import ShapedProxy
from tests.netshape.conftest import status_of_tiny

MODES = ["thread", "subprocess"]


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _start_fails(proxy: ShapedProxy, match: str) -> EnvironmentProblem:
    """The EnvironmentProblem ``proxy.start()`` raises (matching ``match``); a proxy that
    started after all is stopped, not left to the later tests."""
    try:
        with pytest.raises(EnvironmentProblem, match=match) as error:
            proxy.start()
    finally:
        proxy.stop()
    return error.value


@pytest.mark.parametrize("listening", [False, True], ids=["while-importing", "once-listening"])
def test_ctrl_c_during_a_subprocess_start_stops_the_child(
    monkeypatch: pytest.MonkeyPatch, listening: bool
) -> None:
    # The child went on serving (its port held) until the parent exited.
    children: list[subprocess.Popen[str]] = []
    real_read_line = proxy_module._read_line

    def interrupted(process: subprocess.Popen[str], timeout: float) -> str:
        children.append(process)
        if listening:
            real_read_line(process, timeout)
        raise KeyboardInterrupt

    monkeypatch.setattr(proxy_module, "_read_line", interrupted)
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    proxy = ShapedProxy(None, port=port, mode="subprocess")
    try:
        with pytest.raises(KeyboardInterrupt):
            proxy.start()
        (child,) = children
        assert child.poll() is not None, "the child still runs"
        assert _port_is_free(port)
        monkeypatch.setattr(proxy_module, "_read_line", real_read_line)
        with ShapedProxy(None, port=port, mode="subprocess") as again:
            assert again.port == port
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)


def test_ctrl_c_during_the_first_thread_start_leaves_no_lock_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The lock stayed held: every later in-process start said "another ... is running".
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(proxy_module, "_import_mitmproxy_addons", interrupted)
    first = ShapedProxy(None)
    try:
        with pytest.raises(KeyboardInterrupt):
            first.start()
        monkeypatch.undo()
        with ShapedProxy(None) as again:
            assert again.status().offline is False
    finally:
        if first._holds_lock:  # not the later tests' failure too
            first._holds_lock = False
            proxy_module._in_process_lock.release()


@pytest.mark.parametrize("mode", MODES)
def test_start_twice_is_refused_and_stop_then_stops_the_proxy(upstream: Any, mode: str) -> None:
    # In subprocess mode the second start() replaced the first child, which then served on
    # after stop(), until the parent exited.
    proxy = ShapedProxy(None, mode=mode)  # type: ignore[arg-type]
    proxy.start()
    process, port = proxy._process, proxy.port
    try:
        with pytest.raises(EnvironmentProblem, match="already running") as error:
            proxy.start()
        assert error.value.hint == "call stop() first"
        assert proxy.port == port and proxy._process is process
        assert asyncio.run(status_of_tiny(upstream, proxy.url)) == 200
    finally:
        proxy.stop()
        alive = process is not None and process.poll() is None
        if process is not None and alive:  # the orphan, not left to serve on
            process.kill()
            process.wait(timeout=10)
    assert not alive, "the first proxy outlived stop()"
    assert _port_is_free(port)
    proxy.start()  # a stopped proxy starts again
    proxy.stop()


def _der_certificate(pem: Path, der: Path) -> None:
    import ssl

    der.write_bytes(ssl.PEM_cert_to_DER_cert(pem.read_text()))


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (
            lambda d: d.joinpath("junk.pem").write_text("not a certificate\n"),
            "not a PEM certificate",
        ),
        (lambda d: _der_certificate(d / "cert.pem", d / "junk.pem"), "not a PEM certificate"),
        (lambda d: d.joinpath("junk.pem").write_bytes(b""), "the file is empty"),
        (lambda d: d.joinpath("junk.pem").mkdir(), "a directory, not a file"),
    ],
    ids=["text", "der", "empty", "directory"],
)
def test_an_upstream_ca_that_is_no_pem_certificate_is_bad_input(
    self_signed_tls: Any, tmp_path: Path, make: Any, said: str
) -> None:
    # It was taken: the proxy started, and every HTTPS request got a 502 and a traceback.
    make(tmp_path)
    bad = tmp_path / "junk.pem"
    with pytest.raises(BadInput, match=f"upstream CA {bad}: {said}") as error:
        ShapedProxy(None, upstream_ca=bad)
    assert "\n" not in error.value.one_line()
    assert "PEM file of the CA that signed the test servers' certificates" in error.value.hint


def test_upstream_ca_special_paths_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="upstream CA /dev/null: not a regular file"):
        ShapedProxy(None, upstream_ca="/dev/null")
    with pytest.raises(BadInput, match="upstream CA '': an empty path"):
        ShapedProxy(None, upstream_ca="")
    with pytest.raises(BadInput, match=f"upstream CA {tmp_path / 'none.pem'}: no such file"):
        ShapedProxy(None, upstream_ca=tmp_path / "none.pem")


def test_a_non_pem_ssl_cert_file_is_bad_input(
    self_signed_tls: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(junk))
    with pytest.raises(BadInput, match=rf"\$SSL_CERT_FILE {junk}: not a PEM certificate"):
        ShapedProxy(None)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))  # a good one is taken
    assert ShapedProxy(None).upstream_ca == str(tmp_path / "cert.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path))  # not a file: ignored, as by OpenSSL
    assert ShapedProxy(None).upstream_ca is None


@pytest.mark.parametrize("mode", MODES)
def test_a_confdir_that_cannot_be_a_directory_is_an_environment_problem(
    tmp_path: Path, mode: str
) -> None:
    # HOME set to a file: the proxy said "listening on", named a CA that did not exist,
    # and closed every HTTPS connection.
    home = tmp_path / "home"
    home.write_text("a file\n")
    for confdir in (home / ".mitmproxy", home):
        proxy = ShapedProxy(None, confdir=confdir, mode=mode)  # type: ignore[arg-type]
        error = _start_fails(proxy, f"{home} is not a directory")
        assert f"cannot use {confdir} as mitmproxy's confdir" in str(error)
        assert "confdir" in error.hint and "HOME" in error.hint
        assert error.one_line().count("(hint:") == 1


def test_home_set_to_a_file_is_an_environment_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.write_text("a file\n")
    monkeypatch.setenv("HOME", str(home))
    _start_fails(ShapedProxy(None), f"{home}/.mitmproxy as mitmproxy's confdir")


@pytest.mark.parametrize("mode", MODES)
def test_a_confdir_where_mitmproxy_cannot_make_its_ca_is_an_environment_problem(
    tmp_path: Path, mode: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # A directory where mitmproxy's CA file goes: mitmproxy only logged its error (with a
    # traceback), and listened without a CA.
    (tmp_path / "mitmproxy-ca.pem").mkdir()
    proxy = ShapedProxy(None, confdir=tmp_path, mode=mode)  # type: ignore[arg-type]
    _start_fails(proxy, f"no CA in its confdir {tmp_path}: .*directory")
    assert "Traceback" not in capfd.readouterr().err
    with ShapedProxy(None, confdir=tmp_path / "fresh", mode=mode) as proxy:  # type: ignore[arg-type]
        assert proxy.ca_cert_path.is_file()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seconds", ["5", True, b"5"])
def test_offline_takes_only_a_number(mode: str, seconds: object) -> None:
    # "5" raised a TypeError, True was taken as 1 s.
    with ShapedProxy(None, mode=mode) as proxy:  # type: ignore[arg-type]
        with pytest.raises(BadInput, match=f"positive number, not {seconds!r}"):
            proxy.go_offline(seconds)  # type: ignore[arg-type]
        assert proxy.status().offline is False
        proxy.go_offline(1)  # an int is a number
        assert proxy.status().offline is True


def test_the_subprocess_start_error_has_one_hint() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        error = _start_fails(
            ShapedProxy(None, port=port, mode="subprocess"), "did not start: cannot listen"
        )
    assert error.one_line().count("(hint:") == 1
    assert error.hint == "pick a free port (0 picks one) and a local address"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only directory")
def test_a_read_only_confdir_without_a_ca_is_an_environment_problem(tmp_path: Path) -> None:
    tmp_path.joinpath("ro").mkdir(mode=0o500)
    try:
        _start_fails(ShapedProxy(None, confdir=tmp_path / "ro"), "not writable and holds no CA")
    finally:
        tmp_path.joinpath("ro").chmod(0o700)
