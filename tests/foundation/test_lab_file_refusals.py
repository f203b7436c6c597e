"""Lab files an outside tester broke: each is refused up front, at its line and field.

targets.yaml rows of no check, with no value, in no unit, or given twice; numbers that are
infinite, booleans or absurd in networks.yaml, targets.yaml and inventory.yaml; YAML whose
error is on another line than where it shows; durations no command can run for.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from devicelab import config
from devicelab.cli.options import parse_duration, parse_window
from devicelab.errors import BadInput, ConfigError
from devicelab.models import NetworkProfile

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "profiles" / "targets.yaml").read_text(encoding="utf-8")
ROW = '  - {check: %s, platform: %s, op: "<", value: 50, unit: %s, stat: p95, source: s}\n'


def refused(load: Callable[[Path], Any], path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return caught.value


def targets(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text("targets:\n" + "".join(rows), encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


@pytest.mark.parametrize(
    ("typo", "meant", "platform"),
    [
        ("conversation_list_lod", "conversation_list_load", "any"),
        ("unread_cont", "unread_count", "backend"),
    ],
)
def test_a_row_of_no_check_is_refused_at_its_line(
    tmp_path: Path, typo: str, meant: str, platform: str
) -> None:
    # It was passed over: the check ran unjudged (a skip) and the run exited 0.
    path = tmp_path / "targets.yaml"
    path.write_text(SHIPPED.replace(f"{{check: {meant}, platform: {platform}",
                                    f"{{check: {typo}, platform: {platform}", 1),
                    encoding="utf-8")  # fmt: skip
    err = refused(config.load_targets, path)
    index = re.search(r"targets\[(\d+)\]\.check", str(err))
    assert index is not None, str(err)
    assert f": targets[{index[1]}].check: unknown check {typo!r}; did you mean {meant!r}?" in (
        str(err)
    )
    assert err.location is not None and err.location.startswith(f"{path}:{line_of(path, typo)}:")
    assert err.field == f"targets[{index[1]}].check" and err.exit_code == 2


def test_a_row_that_applies_without_a_value_is_refused(tmp_path: Path) -> None:
    # It judged nothing: the check was skipped. applies: false (an N/A cell) needs none.
    path = targets(
        tmp_path,
        "  - {check: reconnect, platform: web, column: web, applies: false, source: s}\n",
        "  - {check: reconnect, platform: any, column: wifi, unit: s, source: s}\n",
    )
    err = refused(config.load_targets, path)
    assert err.location == f"{path}:3:5" and err.field == "targets[1].value"
    assert "missing required field 'value'" in str(err) and "applies: false" in err.hint
    ok = targets(tmp_path, "  - {check: reconnect, applies: false, source: s}\n")
    assert config.load_targets(ok).targets[0].label() == "N/A"


def test_a_row_in_no_unit_the_lab_compares_is_refused_at_load(tmp_path: Path) -> None:
    # `msec` failed only after the check had measured (exit 3, the value lost).
    path = targets(
        tmp_path, ROW % ("message_fetch", "backend", "ms"), ROW % ("reconnect", "any", "msec")
    )
    err = refused(config.load_targets, path)
    assert err.location is not None and err.location.startswith(f"{path}:3:")
    assert err.field == "targets[1].unit"
    assert "unknown unit 'msec'; did you mean 'ms'?" in str(err)


def test_a_row_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    # The first one silently won.
    path = targets(
        tmp_path,
        ROW % ("message_fetch", "backend", "ms"),
        ROW % ("reconnect", "any", "ms"),
        ROW % ("message_fetch", "backend", "s"),
    )
    err = refused(config.load_targets, path)
    assert err.location is not None and err.location.startswith(f"{path}:4:")
    assert err.field == "targets[2].check"
    assert f"other entry: {path}:2:" in str(err) and "a second row" in str(err)
    # Another column or platform is another row.
    config.load_targets(
        targets(tmp_path, ROW % ("reconnect", "any", "ms"), ROW % ("reconnect", "web", "ms"))
    )


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("down_kbps", ".inf", "expected a finite number"),
        ("rtt_ms", ".inf", "expected a finite number"),
        ("jitter_ms", ".inf", "expected a finite number"),
        ("loss_pct", ".nan", "expected a finite number"),
        ("rtt_ms", "yes", "expected a number, found true"),
        ("up_kbps", "on", "expected a number, found true"),
        ("rtt_ms", "1e9", "less than or equal to 60000"),
        ("jitter_ms", "60001", "less than or equal to 60000"),
        ("down_kbps", "100000001", "less than or equal to 100000000"),
        ("down_kbps", "0.001", "greater than or equal to 1"),
        ("up_kbps", "1e-9", "greater than or equal to 1"),
    ],
)
def test_a_profile_number_that_is_no_link_is_refused_at_its_line(
    tmp_path: Path, field: str, value: str, said: str
) -> None:
    # .inf bandwidth: an OverflowError traceback; .inf rtt: an unshaped run; yes: 1 ms;
    # 1e9: `proxy check` waited for ever; 0.001 kbps: not even the control reply came.
    path = tmp_path / "networks.yaml"
    path.write_text(f"profiles:\n  slow:\n    label: S\n    source: s\n    {field}: {value}\n",
                    encoding="utf-8")  # fmt: skip
    err = refused(config.load_networks, path)
    assert err.location == f"{path}:5:{7 + len(field)}", str(err)
    assert err.field == f"profiles.slow.{field}" and said in str(err), str(err)


def test_one_way_delays_that_add_up_to_over_a_minute_are_refused() -> None:
    with pytest.raises(ValidationError, match="a round trip is at most 60000 ms"):
        NetworkProfile(label="x", source="s", down_delay_ms=40_000, up_delay_ms=40_000)


@pytest.mark.parametrize(
    ("load", "text", "field"),
    [
        (config.load_targets, "targets:\n  - {check: reconnect, source: s, value: .inf}\n",
         "targets[0].value"),
        (config.load_targets, "targets:\n  - {check: reconnect, source: s, value: yes}\n",
         "targets[0].value"),
        (config.load_inventory, "devices:\n  w: {platform: web, model: m, os: o, ram_gb: .inf}\n",
         "devices.w.ram_gb"),
        (config.load_inventory, "devices:\n  w: {platform: web, model: m, os: o, power: {kind: "
         "uhubctl, hub: '1-1', port: yes}}\n", "devices.w.power.port"),
    ],
)  # fmt: skip
def test_infinite_and_boolean_numbers_are_refused_in_every_lab_file(
    tmp_path: Path, load: Callable[[Path], Any], text: str, field: str
) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(text, encoding="utf-8")
    err = refused(load, path)
    assert err.field == field and err.location is not None and err.location.startswith(f"{path}:2:")


def test_an_unclosed_quote_names_the_line_it_opened_on(tmp_path: Path) -> None:
    # Only the end of the file was named, lines below the quote to fix.
    path = tmp_path / "targets.yaml"
    path.write_text('targets:\n  - {check: "reconnect, source: s}\n  - {check: a}\n\n',
                    encoding="utf-8")  # fmt: skip
    err = refused(config.load_targets, path)
    assert f"at {path}:2:13)" in str(err) and "opened on line 2" in err.hint, str(err)


@pytest.mark.parametrize(("key", "reads"), [("no", "False"), ("5", "5"), ("on", "True")])
def test_a_yaml_key_that_reads_as_no_name_says_to_quote_it(
    tmp_path: Path, key: str, reads: str
) -> None:
    # It was "profiles[0].[key]: expected a valid string, found False".
    path = tmp_path / "networks.yaml"
    path.write_text(f"profiles:\n  wifi: {{label: W, source: s}}\n  {key}:\n    label: N\n"
                    "    source: s\n", encoding="utf-8")  # fmt: skip
    err = refused(config.load_networks, path)
    assert err.location == f"{path}:3:3" and err.field == f"profiles.{key}"
    assert (
        f"the key {key!r} reads as {reads}" in str(err) and err.hint == f"quote the key ('{key}')"
    )


def test_a_duplicate_key_names_the_first_one_too(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("devices:\n  a: {platform: web, model: m, os: o}\n  b: {platform: web, "
                    "model: m, os: o}\n  a: {platform: web, model: m, os: o}\n",
                    encoding="utf-8")  # fmt: skip
    err = refused(config.load_inventory, path)
    assert err.location == f"{path}:4:3" and "duplicate key 'a' (first at line 2)" in str(err)


@pytest.mark.parametrize(
    ("text", "said"),
    [("9" * 400, "longer than 24 h"), ("25h", "longer than 24 h"), ("-1s", "must be positive")],
)
def test_durations_no_command_can_run_for_are_refused(text: str, said: str) -> None:
    for parse in (parse_duration, parse_window):
        with pytest.raises(BadInput, match=said) as caught:
            parse(text)
        assert len(caught.value.one_line()) < 120
    assert parse_duration("24h") == 86_400


def _cli(
    args: list[str], tmp_path: Path, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEVICELAB_STATE": str(tmp_path / "state")}
    if home is not None:
        env["DEVICELAB_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "devicelab", *args], capture_output=True,
                          text=True, timeout=120, env=env, check=False)  # fmt: skip


def test_a_load_of_an_endless_duration_is_refused_before_it_starts(tmp_path: Path) -> None:
    # It started, then exited 3 with a pydantic WorkerSpec error and an unfinished
    # results.json in --out.
    out = tmp_path / "out"
    done = _cli(["backend", "load", "--dsn", "postgresql://127.0.0.1:1/none", "--users", "2",
                 "--duration", "9" * 400, "--out", str(out)], tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "longer than 24 h" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not out.exists()


def test_backend_check_refuses_a_misspelt_backend_row_before_any_work(tmp_path: Path) -> None:
    # docs/backend_checks.md: a broken targets.yaml ends the check with its ConfigError,
    # one line with file:line and the field, never passed over.
    lab = tmp_path / "lab"
    (lab / "profiles").mkdir(parents=True)
    path = lab / "profiles" / "targets.yaml"
    path.write_text(SHIPPED.replace("{check: unread_count,", "{check: unread_cont,", 1),
                    encoding="utf-8")  # fmt: skip
    done = _cli(["backend", "check", "--dsn", "postgresql://127.0.0.1:1/none", "--out",
                 str(tmp_path / "out")], tmp_path, home=lab)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{path}:{line_of(path, 'unread_cont')}:" in done.stderr, done.stderr
    assert "unknown check 'unread_cont'; did you mean 'unread_count'?" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_bad_profile_given_to_the_proxy_process_is_one_line(tmp_path: Path) -> None:
    # It was "bad profile: 1 validation error for NetworkProfile" and pydantic's block.
    bad = '{"label": "x", "source": "s", "jitter_ms": 1e400}'
    argv = [sys.executable, "-m", "devicelab.netshape.serve", "--profile-json", bad,
            "--listen", "127.0.0.1:0"]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        "netshape: error: bad profile: jitter_ms: expected a finite number, found inf"
    ), done.stderr


def test_the_proxy_options_say_what_is_wrong_with_a_profile_in_one_line() -> None:
    from mitmproxy.exceptions import OptionsError

    from devicelab.netshape.options import parse_networks, parse_profile

    with pytest.raises(OptionsError) as caught:
        parse_profile('{"label": "x", "source": "s", "rtt_ms": 1e9}')
    assert str(caught.value) == (
        "netshape_profile: rtt_ms: expected less than or equal to 60000, found 1000000000.0"
    )
    with pytest.raises(OptionsError) as caught:
        parse_networks('{"a": {"label": "x", "source": "s", "down_kbps": true}}')
    assert str(caught.value).startswith("netshape_networks: down_kbps: expected a number")
