"""Inputs that are well-formed but absurd, each refused in one line (exit 2) before any
work: a YAML nested past Python's stack or made of aliases of aliases, a file too big to
be a lab file, a port variable that is no port, a load window too short to judge, a
``serve --host`` this machine cannot listen on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devicelab import config
from devicelab.errors import BadInput, ConfigError
from devicelab.ports import env_port

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devicelab", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_a_lab_file_nested_past_the_stack_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("devices: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        config.load_inventory(path)


def test_aliases_of_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    # Seven levels of ten aliases: 10 million values from 400 bytes.
    lines = ['a0: &a0 ["x"]']
    for level in range(1, 8):
        refs = ", ".join(f"*a{level - 1}" for _ in range(10))
        lines.append(f"a{level}: &a{level} [{refs}]")
    path = tmp_path / "networks.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="more than 200,000 values"):
        config.read_yaml(path)


def test_a_file_too_big_to_be_a_lab_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devicelab import config_yaml

    monkeypatch.setattr(config_yaml, "_MAX_BYTES", 100)
    path = tmp_path / "inventory.yaml"
    path.write_text("devices: []\n" + "# a comment\n" * 20)
    with pytest.raises(ConfigError, match="larger than"):
        config.load_inventory(path)


@pytest.mark.parametrize("value", ["abc", "99999", "-1", "0", "５０３７"])
def test_a_port_variable_that_is_no_port_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", value)
    with pytest.raises(BadInput, match=r"ANDROID_ADB_SERVER_PORT: .* is not a TCP port"):
        env_port("ANDROID_ADB_SERVER_PORT", 5037)


def test_a_port_variable_unset_or_empty_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANDROID_ADB_SERVER_PORT", raising=False)
    assert env_port("ANDROID_ADB_SERVER_PORT", 5037) == 5037
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", " ")
    assert env_port("ANDROID_ADB_SERVER_PORT", 5037) == 5037
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "5160")
    assert env_port("ANDROID_ADB_SERVER_PORT", 5037) == 5160


def test_usbmuxd_at_a_port_that_is_none(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "devices:\n  iphone11: {platform: ios, udid: 00008030-001A2D3E3C41002E,"
        " model: iPhone 11, os: iOS 17.5}\n"
    )
    env = {"USBMUXD_SOCKET_ADDRESS": "127.0.0.1:99999", "HOME": str(tmp_path)}
    done = _cli("devices", "--inventory", str(inventory), env=env)
    assert done.returncode == 2, done.stderr
    assert "USBMUXD_SOCKET_ADDRESS=127.0.0.1:99999: '99999' is not a TCP port" in done.stderr
    assert "Traceback" not in done.stderr
    doctor = _cli("doctor", env=env)
    assert "Traceback" not in doctor.stderr
    assert "99999 is not a TCP port" in doctor.stdout


def test_backend_check_load_is_judged_as_backend_load_duration(tmp_path: Path) -> None:
    for given, said in [("10ms", "--load 10ms: a step's window is 1 s at least"),
                        ("", "bad duration ''")]:  # fmt: skip
        done = _cli("backend", "check", "--load", given, "--out", str(tmp_path / "out"))
        assert done.returncode == 2, done.stderr
        assert said in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("", "--host is empty"),
        ("127.0.0.1:80", "not an address, nor a name that resolves"),
        ("999.1.1.1", "not an address, nor a name that resolves"),
        ("192.0.2.1", "cannot listen there"),  # TEST-NET-1: no machine's own address
    ],
)
def test_serve_refuses_a_host_before_any_database_work(host: str, said: str) -> None:
    # A DSN of a database that is not there: reached, it would be exit 3, not 2.
    dsn = "postgresql://postgres@127.0.0.1:1/devicelab_never"
    done = _cli("backend", "serve", "--host", host, "--dsn", dsn)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["load", "--users", "100,200000"], "more than 100,000 users in one step"),
        (["load", "--processes", "1000"], "'--processes'"),
        (["check", "--runs", "99999999999999999999999"], "'--runs'"),
    ],
)
def test_backend_counts_beyond_any_run_are_refused(args: list[str], said: str) -> None:
    done = _cli("backend", *args)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
