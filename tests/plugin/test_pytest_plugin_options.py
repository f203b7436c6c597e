"""The plugin's options checked where every session passes: under pytest-xdist (whose
controller collects nothing) and in a suite whose tests use none of the fixtures, a typo
is one usage line before any test runs, never an INTERNALERROR traceback nor a silent
pass; and hints name the plugin's options, not the CLI's."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicelab.errors import BadInput
from devicelab.pytest_plugin import _one_line

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]
INVENTORY = f"--devicelab-inventory={ROOT / 'inventory.yaml'}"
PLAIN = "def test_plain():\n    assert True\n"
USES_LAB = "def test_inv(lab_inventory):\n    assert lab_inventory\n"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--devicelab-device", "android-lowent", INVENTORY], "did you mean 'android-lowend'"),
        (["--devicelab-network", "6g", INVENTORY], "unknown network '6g'; did you mean '5g'"),
        (["--devicelab-inventory=nonexist.yaml"], "nonexist.yaml: no such file"),
    ],
)
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
@pytest.mark.parametrize("suite", [PLAIN, USES_LAB], ids=["plain", "fixtures"])
def test_a_bad_option_is_one_usage_line_before_any_test(
    pytester: pytest.Pytester, args: list[str], said: str, workers: list[str], suite: str
) -> None:
    # Under -n 2 the workers' UsageError reached the user as the controller's INTERNALERROR
    # traceback (exit 3); with no test using a fixture the typo passed unsaid (exit 0).
    pytester.makepyfile(test_suite=suite)
    result = pytester.runpytest_subprocess(*workers, *args, "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    result.stderr.fnmatch_lines([f"ERROR: devicelab: *{said}*"])
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    assert "passed" not in result.stdout.str()


def test_a_junitxml_onto_devicelabs_own_is_refused(pytester: pytest.Pytester) -> None:
    # pytest's --junitxml and devicelab's junit.xml in --devicelab-out were the same file:
    # the one written last replaced the other.
    pytester.makepyfile(test_suite=PLAIN)
    result = pytester.runpytest_subprocess(
        "--devicelab-out", "o", "--junitxml", "o/junit.xml", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: devicelab: --junitxml o/junit.xml is the junit.xml devicelab writes into*"]
    )
    assert not (pytester.path / "o").exists()
    other = pytester.runpytest_subprocess(
        "--devicelab-out", "o", "--junitxml", "o/pytest.xml", "-p", "no:cacheprovider"
    )
    other.assert_outcomes(passed=1)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_junitxml_onto_a_workers_own_is_refused(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    # Under xdist worker gw0 writes o/gw0/junit.xml: pytest's file replaced it (accepted,
    # as only o/junit.xml was compared); and a plain session removes an old gw0 folder.
    pytester.makepyfile(test_suite=PLAIN)
    result = pytester.runpytest_subprocess(
        *workers, "--devicelab-out", "o", "--junitxml", "o/gw0/junit.xml", "-p", "no:cacheprovider"
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines(
        [
            "ERROR: devicelab: --junitxml o/gw0/junit.xml is the junit.xml devicelab's xdist "
            "worker gw0 writes*"
        ]
    )
    other = pytester.runpytest_subprocess(
        *workers, "--devicelab-out", "o", "--junitxml", "o/gw0x/junit.xml", "-p", "no:cacheprovider"
    )  # fmt: skip
    other.assert_outcomes(passed=1)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_an_out_that_is_a_file_is_one_usage_line_when_the_lab_is_used(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    # Every test using devicelab_lab errored at setup with it (exit 1), one by one.
    pytester.makepyfile(
        test_lab="def test_lab(devicelab_lab):\n    pass\n\ndef test_two(devicelab_lab):\n"
        "    pass\n"
    )
    pytester.makefile(".txt", afile="not a folder")
    result = pytester.runpytest_subprocess(
        *workers, "--devicelab-out", "afile.txt", INVENTORY, "-p", "no:cacheprovider"
    )
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    result.stderr.fnmatch_lines(
        ["ERROR: devicelab: *afile.txt*: cannot write results there (*afile.txt is not a "
         "folder) (hint: give --devicelab-out a folder you may write to)"]
    )  # fmt: skip
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    # A suite that does not use the lab is not stopped by it.
    pytester.makepyfile(test_lab=PLAIN)
    plain = pytester.runpytest_subprocess(
        *workers, "--devicelab-out", "afile.txt", INVENTORY, "-p", "no:cacheprovider"
    )
    plain.assert_outcomes(passed=1)


def test_a_hint_names_the_plugins_option_not_the_clis() -> None:
    exc = BadInput("out: cannot write results there", hint="give --out a folder you can write")
    config = pytest.Config.__new__(pytest.Config)  # no xdist worker: no workerinput
    assert _one_line(exc, config) == (
        "out: cannot write results there (hint: give --devicelab-out a folder you can write)"
    )
    bare = BadInput("no hint")
    assert _one_line(bare, config) == "no hint"


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_lab_on_the_offline_network_is_one_usage_line(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    # Only the collected tests tell it (devicelab_lab cannot measure offline): under xdist
    # the worker's refusal is sent to the controller, which says it, not an INTERNALERROR.
    pytester.makepyfile(test_lab="def test_lab(devicelab_lab):\n    pass\n")
    result = pytester.runpytest_subprocess(
        *workers, "--devicelab-network", "offline", INVENTORY, "-p", "no:cacheprovider"
    )
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "ERROR: devicelab: " in result.stderr.str() and "offline" in result.stderr.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
