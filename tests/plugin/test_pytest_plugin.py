"""The pytest plugin as a user's suite meets it: options, device auto-skip, shaped_proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]

SUITE = """
import time, urllib.request
import pytest
from devicelab.testing.upstream import Upstream

def test_needs_a_phone(lab_device):
    assert lab_device.platform == "android"

def test_network_is_selected(lab_network):
    assert lab_network.id == "4g" and lab_network.rtt == 170

def test_requests_pay_the_round_trip(shaped_proxy):
    with Upstream() as upstream:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": shaped_proxy.url})
        )
        start = time.perf_counter()
        assert opener.open(upstream.base + "/bytes?n=10", timeout=10).read() == b"x" * 10
        elapsed = time.perf_counter() - start
    # one RTT (170 ms) at least; a new connection through the proxy adds no more than ~2
    assert 0.17 <= elapsed < 0.6, elapsed
"""


def test_a_users_suite_runs_with_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(
        "--devicelab-network", "4g", "-rs", "-p", "no:cacheprovider",
        f"--devicelab-inventory={ROOT / 'inventory.yaml'}",
    )  # fmt: skip
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*no device selected (--devicelab-device ID)*"])


def test_a_selected_device_is_not_skipped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_phone="def test_phone(lab_device):\n    assert lab_device.serial\n")
    result = pytester.runpytest_subprocess(
        "--devicelab-device", "android-lowend", "-p", "no:cacheprovider",
        f"--devicelab-inventory={ROOT / 'inventory.yaml'}",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess(
        "--devicelab-device", "android-lowent", "-p", "no:cacheprovider",
        f"--devicelab-inventory={ROOT / 'inventory.yaml'}",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: devicelab: *did you mean 'android-lowend'*"])


def test_an_unknown_network_is_a_usage_error_before_any_test_runs(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(
        "--devicelab-network", "6g", "-p", "no:cacheprovider",
        f"--devicelab-inventory={ROOT / 'inventory.yaml'}",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: devicelab: unknown network '6g'; did you mean '5g'?*"])
    assert "Traceback" not in result.stderr.str()
    # Refused as the session starts: nothing collected, nothing ran.
    assert "collected" not in result.stdout.str() and "passed" not in result.stdout.str()


@pytest.mark.parametrize("fixture", ["lab_inventory", "shaped_proxy"])
def test_a_wrong_inventory_is_a_usage_error_without_a_device_selected(
    pytester: pytest.Pytester, fixture: str
) -> None:
    # lab_inventory met it as a traceback in the test; shaped_proxy never said a word.
    pytester.makepyfile(test_inv=f"def test_inv({fixture}):\n    assert {fixture}\n")
    pytester.makefile(".yaml", broken="devices:\n  p:\n    prot: 1\n")
    for inventory, said in (("nonexist.yaml", "no such file"), ("broken.yaml", "prot")):
        result = pytester.runpytest_subprocess(
            f"--devicelab-inventory={inventory}", "-p", "no:cacheprovider"
        )
        assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
        result.stderr.fnmatch_lines([f"ERROR: devicelab: {inventory}*{said}*"])
        assert "Traceback" not in result.stderr.str() + result.stdout.str()


LINK_SUITE = """
import time, urllib.request
from devicelab.config import network_profile
from devicelab.testing.upstream import Upstream

def test_switches_and_cuts_the_link_then_fails(shaped_proxy):
    shaped_proxy.set_profile(network_profile("slow-3g"))
    shaped_proxy.go_offline()
    assert False, "a failing test leaves the link as it made it"

def test_finds_the_sessions_network_again(shaped_proxy):
    assert shaped_proxy.profile.id == "4g" and not shaped_proxy.status().offline
    with Upstream() as upstream:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": shaped_proxy.url})
        )
        start = time.perf_counter()
        opener.open(upstream.base + "/bytes?n=10", timeout=10).read()
        elapsed = time.perf_counter() - start
    assert 0.17 <= elapsed < 0.4, elapsed  # 4G's round trip, not slow-3g's 400 ms
"""


PROFILE_BY_ID_SUITE = """
import pytest
from devicelab.errors import UnknownId

def test_switches_by_profile_id(shaped_proxy):
    shaped_proxy.set_profile("slow-3g")
    assert shaped_proxy.profile.id == "slow-3g"
    assert shaped_proxy.status().profile.id == "slow-3g"

def test_a_misspelled_profile_id_says_the_closest(shaped_proxy):
    with pytest.raises(UnknownId, match="unknown network 'slow-3gg'; did you mean 'slow-3g'"):
        shaped_proxy.set_profile("slow-3gg")
    assert shaped_proxy.profile.id == "4g"
"""


def test_set_profile_takes_a_profile_id(pytester: pytest.Pytester) -> None:
    # shaped_proxy.set_profile("slow-3g") raised AttributeError ('str' has no model_dump_json).
    pytester.makepyfile(test_by_id=PROFILE_BY_ID_SUITE)
    result = pytester.runpytest_subprocess(
        "--devicelab-network", "4g", "-p", "no:cacheprovider",
        f"--devicelab-inventory={ROOT / 'inventory.yaml'}",
    )  # fmt: skip
    result.assert_outcomes(passed=2)


def test_the_next_test_gets_the_sessions_network_back(pytester: pytest.Pytester) -> None:
    # The session's proxy kept slow-3g and offline into the next test (and devicelab_lab's
    # results judged a slow-3g measurement in the 4G column).
    pytester.makepyfile(test_link=LINK_SUITE)
    result = pytester.runpytest_subprocess(
        "--devicelab-network", "4g", "-p", "no:cacheprovider",
        f"--devicelab-inventory={ROOT / 'inventory.yaml'}",
    )  # fmt: skip
    result.assert_outcomes(passed=1, failed=1)


def test_a_lab_that_cannot_start_errors_with_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest.fail inside the except block printed the handled error too ("During handling
    # of the above exception, another exception occurred").
    monkeypatch.setenv("DEVICELAB_STATE", "/dev/null/state")  # its backend cannot start
    pytester.makepyfile(test_lab="def test_lab(devicelab_lab):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--devicelab-inventory={ROOT / 'inventory.yaml'}"
    )
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert "devicelab: cannot use the devicelab state folder /dev/null/state" in output
    assert "During handling" not in output and "Traceback" not in output


DEAD_PROXY_SUITE = """
def test_the_proxy_goes_away(shaped_proxy):
    shaped_proxy.stop()  # as a proxy that died mid-session

def test_the_next_test_runs(lab_network):
    assert lab_network.id == "4g"
"""


def test_a_proxy_gone_mid_session_is_one_error_line_for_that_test(
    pytester: pytest.Pytester,
) -> None:
    # Putting the session's network back after the test met the dead proxy as a
    # traceback out of the autouse fixture (EnvironmentProblem through proxy.status()).
    pytester.makepyfile(test_dead=DEAD_PROXY_SUITE)
    result = pytester.runpytest_subprocess(
        "--devicelab-network", "4g", "-p", "no:cacheprovider",
        f"--devicelab-inventory={ROOT / 'inventory.yaml'}",
    )  # fmt: skip
    result.assert_outcomes(passed=2, errors=1)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        ["devicelab: putting the session's network back failed: the proxy is not running*"]
    )
    assert "Traceback" not in output and "proxy.py" not in output, output
