"""The CLI as users run it: a real process, its exit codes and its one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import adbutils
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEVICELAB = [sys.executable, "-m", "devicelab"]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEVICELAB, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("devicelab: error: ")
    return lines[0]


def test_help_lists_the_commands() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in ("run", "devices", "doctor"):
        assert command in done.stdout


def test_malformed_inventory_exits_2_naming_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "inventory.yaml"
    bad.write_text("devices:\n  web:\n    platform: web\n    model: C\n    os: D\n    colr: x\n")
    line = assert_one_line_error(run("devices", "--inventory", str(bad)), 2)
    assert f"{bad}:6:5" in line and "devices.web.colr" in line
    bad.write_text("devices:\n  a:\n    platform: ios\n    model: M\n    os: iOS\n    udid: 5\n"
                   "    year: soon\n")  # fmt: skip
    line = assert_one_line_error(run("devices", "--inventory", str(bad)), 2)
    assert f"{bad}:7:11" in line and "devices.a.year" in line and "'soon'" in line


def test_unknown_network_suggests_the_closest() -> None:
    line = assert_one_line_error(run("run", "--device", "web", "--network", "4G"), 2)
    assert "did you mean '4g'" in line
    line = assert_one_line_error(run("run", "--device", "iphone-11", "--network", "4g"), 2)
    assert "did you mean 'iphone11'" in line


@pytest.mark.parametrize(
    ("args", "said", "where"),
    [
        (["run", "--device", "web", "--no-such-flag"], "No such option: --no-such-flag", "run"),
        (["run"], "Missing option '--device'", "run"),
        (["report", "--format", "md"], "Missing argument 'RESULTS.json'", "report"),
        (["backend", "serve", "--port", "70000"], "less than or equal to 65535", "backend serve"),
        (["proxy", "check"], "Missing option '--network'", "proxy check"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_commands_help(
    args: list[str], said: str, where: str
) -> None:
    # Click printed three lines (usage, "Try ... for help", "Error: ...") and no hint.
    line = assert_one_line_error(run(*args), 2)
    assert said in line and line.endswith(f"(hint: see 'devicelab {where} --help')")


def test_an_unwritable_out_is_refused_before_anything_starts() -> None:
    # It was found only after the backend was seeded, the proxy and Chromium started and
    # users signed in; the one line (no progress lines) shows nothing started.
    line = assert_one_line_error(run("run", "--device", "web", "--out", "/dev/null/x"), 2)
    assert "/dev/null/x: cannot write results there" in line


def test_an_out_that_is_a_file_says_so(tmp_path: Path) -> None:
    # It said "(File exists)", mkdir's words, of a results.json given as --out.
    given = tmp_path / "results.json"
    given.write_text("{}", encoding="utf-8")
    line = assert_one_line_error(run("run", "--device", "web", "--out", str(given)), 2)
    assert f"{given}: cannot write results there (it is a file, not a folder)" in line
    assert given.read_text(encoding="utf-8") == "{}"


def test_the_load_refuses_bad_input_before_it_connects(tmp_path: Path) -> None:
    # Port 1 refuses: exit 3 would mean the input was checked only after the connection
    # (it was checked after the whole load, minutes of it).
    unreachable = "postgresql://postgres@127.0.0.1:1/x"
    done = run("backend", "load", "--dsn", unreachable, "--users", "3", "--out", "/dev/null/x")
    assert "/dev/null/x: cannot write results there" in assert_one_line_error(done, 2)
    done = subprocess.run(
        [*DEVICELAB, "backend", "load", "--dsn", unreachable, "--users", "3"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env={**os.environ, "DEVICELAB_HOME": str(tmp_path / "missing")},
    )
    assert "DEVICELAB_HOME" in assert_one_line_error(done, 2)


@pytest.mark.parametrize(
    "command", [["check"], ["datagen", "--messages", "5", "--allow-writes"], ["load"], ["serve"]]
)
def test_an_empty_dsn_is_refused_not_read_as_no_database(command: list[str]) -> None:
    # libpq would read "" as its defaults, and the load took it for "no database": its
    # users then ran half the mix, and the verdict judged zeros.
    line = assert_one_line_error(run("backend", *command, "--dsn", " "), 2)
    assert "--dsn is empty" in line and "managed cluster" in line


def test_a_missing_browser_is_found_before_anything_starts(tmp_path: Path) -> None:
    # It was found after the backend, the app and the proxy had started (~10 s).
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "devices:\n  w:\n    platform: web\n    model: C\n    os: D\n"
        "    browser: /nonexistent/chromium\n"
    )
    args = ("run", "--device", "w", "--inventory", str(inventory), "--out", str(tmp_path / "o"))
    line = assert_one_line_error(run(*args), 3)
    assert "/nonexistent/chromium" in line


def test_scenarios_may_be_given_comma_separated() -> None:
    args = ("run", "--device", "web", "--scenario", "message_delivery,reconect")
    line = assert_one_line_error(run(*args), 2)
    assert "unknown scenario 'reconect'; did you mean 'reconnect'?" in line


def test_psycopgs_cleanup_warnings_stay_out_of_a_stopped_command() -> None:
    # SIGTERM during backend check printed "error ignored in rollback of <Transaction>".
    code = (
        "import logging\nfrom devicelab.cli import main\n"
        "try:\n    main(['devices', '--help'])\nexcept SystemExit:\n    pass\n"
        "logging.getLogger('psycopg').warning('error ignored in rollback of <Transaction>')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "error ignored" not in done.stderr


def test_a_bare_group_shows_its_help() -> None:
    done = run()
    assert (
        done.returncode == 2 and "Usage: devicelab [OPTIONS] COMMAND" in done.stdout + done.stderr
    )


def test_devices_json_reports_each_platform_state(tmp_path: Path) -> None:
    # A private adb server (started by the command, as `adb devices` does), never 5037;
    # usbmuxd on a closed loopback port, never a real /var/run/usbmuxd.
    with socket.socket() as sock, socket.socket() as closed:
        sock.bind(("127.0.0.1", 0))
        closed.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        usbmuxd = f"127.0.0.1:{closed.getsockname()[1]}"
    env = {**os.environ, "ANDROID_ADB_SERVER_PORT": str(port), "HOME": str(tmp_path)}
    env["USBMUXD_SOCKET_ADDRESS"] = usbmuxd
    try:
        done = subprocess.run(
            [*DEVICELAB, "devices", "--json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        adb = Path(adbutils.__file__).parent / "binaries" / "adb"
        stop = [str(adb), "-P", str(port), "kill-server"]
        subprocess.run(stop, env=env, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    devices = {d["id"]: d for d in json.loads(done.stdout)}
    assert devices["web"]["platform"] == "web"
    assert devices["web"]["state"] in ("ready", "missing")
    # The shipped inventory's serials are placeholders: the adb server does not list them.
    lowend = devices["android-lowend"]
    assert (lowend["state"], lowend["detail"]) == (
        "absent",
        "set this device's serial in the inventory (`adb devices -l`)",
    )
    assert devices["iphone11"]["state"] == "unknown"  # no usbmuxd answers
    detail = devices["iphone11"]["detail"]
    assert f"no usbmuxd answers on {usbmuxd}" in detail or "devicelab[ios]" in detail


def test_doctor_json_names_a_fix_for_each_missing_tool() -> None:
    done = run("doctor", "--json")
    findings = json.loads(done.stdout)
    names = {f["name"] for f in findings}
    assert {"python", "chromium", "postgresql", "adb", "appium"} <= names
    for f in findings:
        assert f["found"] or f["fix"], f
    required_missing = [f for f in findings if f["required"] and not f["found"]]
    assert done.returncode == (3 if required_missing else 0)


@pytest.mark.parametrize(("given", "command"), [
    ("load_100", "devicelab backend load"),
    ("buffer_hit_ratio", "devicelab backend check"),
])  # fmt: skip
def test_a_backend_check_id_given_to_run_points_at_the_backend_command(
    given: str, command: str
) -> None:
    """It said "did you mean 'video_upload_10mb'?" for load_100."""
    line = assert_one_line_error(run("run", "--device", "web", "--scenario", given), 2)
    assert f"'{given}' is a backend check" in line and command in line
    assert "did you mean" not in line


def test_doctor_looks_for_postgresql_where_the_backend_commands_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """$DEVICELAB_PG_BINDIR names the binaries every backend command uses: doctor said
    "ok" from /usr/lib/postgresql while each of them refused the folder given."""
    monkeypatch.setenv("DEVICELAB_PG_BINDIR", "/nonexistent")
    done = run("doctor", "--json")
    (postgres,) = [f for f in json.loads(done.stdout) if f["name"] == "postgresql"]
    assert not postgres["found"]
    assert "DEVICELAB_PG_BINDIR=/nonexistent" in postgres["detail"]
    assert "unset it" in postgres["fix"]
    assert done.returncode == 3


@pytest.mark.parametrize(
    ("sent", "code", "said"),
    [("SIGINT", 130, "devicelab: interrupted"), ("SIGTERM", 143, "devicelab: terminated")],
)
def test_ctrl_c_and_sigterm_are_one_line_and_their_exit_code(
    sent: str, code: int, said: str
) -> None:
    # Typer turns KeyboardInterrupt into a silent exit 130; the user must still be told.
    # SIGTERM (a cancelled CI job) stops a command the same way, so it restores what it
    # touched, instead of killing it on the spot.
    import signal
    import time

    with socket.socket() as silent:  # a "server" that accepts and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        dsn = f"postgresql://app@127.0.0.1:{port}/none?connect_timeout=30"
        proc = subprocess.Popen(
            [*DEVICELAB, "backend", "check", "--dsn", dsn],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            # A background shell hands its children SIGINT ignored; a user's terminal does not.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 (no locks)
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until it is blocked on our socket
            silent.settimeout(0.5)
            try:
                peer, _ = silent.accept()
                break
            except TimeoutError:
                continue
        time.sleep(0.3)
        proc.send_signal(getattr(signal, sent))
        out, err = proc.communicate(timeout=30)
        peer.close()
    assert proc.returncode == code, (out, err)
    assert err.strip().splitlines() == [said]


_INTERRUPTED_WHILE_LOADING = """
import sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "devicelab.cli":
            raise KeyboardInterrupt  # as Ctrl-C lands while the CLI is still importing
sys.meta_path.insert(0, Interrupt())
from devicelab.console import main
main()
"""


def test_ctrl_c_while_the_cli_loads_is_one_line_and_130() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="devicelab")
    assert script.value == "devicelab.console:main"  # the script goes through the guard
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_WHILE_LOADING],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (130, "devicelab: interrupted\n")


def test_a_bad_backend_out_is_refused_before_the_check_runs(tmp_path: Path) -> None:
    # It ran the whole suite (with --load: minutes) and then threw the results away.
    afile = tmp_path / "afile"
    afile.write_text("keep")
    nobody = "postgresql://postgres@127.0.0.1:1/none"  # never reached: exit 3 if it were
    line = assert_one_line_error(run("backend", "check", "--dsn", nobody, "--out", str(afile)), 2)
    assert "afile is not a folder" in line and afile.read_text() == "keep"
    out = tmp_path / "out"
    (out / "junit.xml").mkdir(parents=True)
    line = assert_one_line_error(run("backend", "check", "--dsn", nobody, "--out", str(out)), 2)
    assert "junit.xml: is a folder" in line
    new = tmp_path / "new" / "deeper"
    assert_one_line_error(run("backend", "check", "--dsn", nobody, "--out", str(new)), 3)
    assert not (tmp_path / "new").exists()  # nothing made for a run that never ran


@pytest.mark.parametrize(
    "option",
    [
        ("--messages", "9999999999999999999"),  # ran until the server's disk was full
        ("--users", "99999999999999"),
        ("--days", "100000000"),
        ("--skew", "inf"),  # reached the SQL as the column "inf"
        ("--unread", "1e308"),
        ("--seed", "1000000"),  # a pydantic traceback, exit 1
    ],
)
def test_datagen_scales_out_of_bounds_are_refused_before_connecting(
    option: tuple[str, str],
) -> None:
    nobody = "postgresql://postgres@127.0.0.1:1/none"  # never reached: exit 3 if it were
    args = ("backend", "datagen", "--dsn", nobody, "--messages", "10", *option, "--allow-writes")
    line = assert_one_line_error(run(*args), 2)
    # Refused by the option's range (its bounds are in --help) or by DatagenParams.
    assert line.startswith(
        (f"devicelab: error: {option[0]} ", f"devicelab: error: Invalid value for '{option[0]}'")
    ), line


def test_a_state_folder_that_cannot_be_made_is_one_line_and_3(tmp_path: Path) -> None:
    # DEVICELAB_STATE under a regular file: a FileExistsError traceback, exit 1.
    afile = tmp_path / "afile"
    afile.write_text("")
    env = {**os.environ, "DEVICELAB_STATE": str(afile / "state")}
    done = subprocess.run(
        [*DEVICELAB, "backend", "check", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    line = assert_one_line_error(done, 3)
    assert "cannot use the devicelab state folder" in line and "DEVICELAB_STATE" in line


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--scenario", ""), "--scenario names no check"),  # it ran all 17 (7 minutes)
        (("--scenario", " , "), "--scenario names no check"),
        (("--out", ""), "--out is empty"),  # it wrote the reports into the current folder
    ],
)
def test_an_empty_selection_or_out_is_bad_input(args: tuple[str, str], said: str) -> None:
    line = assert_one_line_error(run("run", "--device", "web", "--network", "4g", *args), 2)
    assert said in line


@pytest.mark.parametrize(
    "command",
    [
        ("backend", "check", "--dsn", "postgresql://postgres@127.0.0.1:1/none"),
        ("backend", "load", "--dsn", "postgresql://postgres@127.0.0.1:1/none"),
        ("battery", "--device", "web"),
    ],
)
def test_every_empty_out_is_bad_input(command: tuple[str, ...]) -> None:
    line = assert_one_line_error(run(*command, "--out", ""), 2)
    assert "--out is empty" in line


def test_the_run_summary_prints_numbers_as_the_reports_do() -> None:
    # p95 2.189e+04 ms beside 21.43 s.
    import json

    from devicelab.cli.run import summary_lines
    from devicelab.models import Results

    raw = json.loads((ROOT / "tests" / "report" / "data" / "results.json").read_text())
    raw["checks"][0]["value"] = 21890.4
    lines = summary_lines(Results.model_validate(raw))
    assert any(" 21890 ms" in line for line in lines), lines
    assert not any("e+0" in line for line in lines)
