"""``devicelab proxy`` and ``devicelab proxy check`` as a user runs them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

DEVICELAB = [sys.executable, "-c", "from devicelab.cli import main; main()"]


@pytest.mark.slow
def test_foreground_proxy_prints_its_address_shapes_and_stops_cleanly(upstream: Any) -> None:
    process = subprocess.Popen(
        [*DEVICELAB, "proxy", "--network", "5g", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        assert "adb reverse" in process.stdout.readline() + process.stdout.read(400)
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
        )
        start = time.perf_counter()
        with opener.open(f"{upstream.base}/bytes?n=10", timeout=10) as response:
            assert response.read() == b"x" * 10
        assert time.perf_counter() - start >= 0.010  # the 5G round trip was applied
        # Switched by name through the control endpoint, without a restart.
        switch = urllib.request.Request(
            "http://netshape.devicelab/profile", data=b"slow-3g", method="POST"
        )
        with opener.open(switch, timeout=10) as response:
            assert json.load(response) == {"ok": True}
        start = time.perf_counter()
        with opener.open(f"{upstream.base}/bytes?n=10", timeout=10) as response:
            assert response.read() == b"x" * 10
        assert time.perf_counter() - start >= 0.400  # slow-3g's round trip
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


@pytest.mark.slow
def test_check_prints_achieved_vs_profile_as_json() -> None:
    result = subprocess.run(
        [*DEVICELAB, "proxy", "check", "--network", "4g", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["profile"] == {
        "rtt_ms": 170.0,
        "down_kbps": 10000.0,
        "up_kbps": 5000.0,
        "loss_pct": 0.0,
        "jitter_ms": 0.0,
    }
    assert "median" in report["rtt_method"]
    achieved = report["achieved"]
    assert 170 <= achieved["rtt_ms"] < 190
    assert achieved["down_kbps"] == pytest.approx(10_000, rel=0.05)
    assert achieved["up_kbps"] == pytest.approx(5_000, rel=0.05)
    assert (report["verdict"], report["off"]) == ("pass", [])


def test_unknown_network_is_bad_input() -> None:
    result = subprocess.run(
        [*DEVICELAB, "proxy", "check", "--network", "4gg"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "did you mean '4g'" in result.stderr


@pytest.mark.parametrize("before", [["--network", "4g"], ["--listen", "127.0.0.1:0"]])
def test_the_proxy_s_options_before_check_are_refused_with_the_order_to_use(
    before: list[str],
) -> None:
    """``proxy --network 4g check`` said "Missing option '--network'"; ``proxy --listen X
    check --network 4g`` ignored --listen and measured a proxy of its own."""
    result = subprocess.run(
        [*DEVICELAB, "proxy", *before, "check", "--network", "4g"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stdout == "", "it measured"
    assert f"{before[0]} before `check`" in result.stderr
    assert "devicelab proxy check --network NAME" in result.stderr


def test_importing_netshape_and_the_cli_does_not_load_mitmproxy() -> None:
    code = (
        "import sys, devicelab.netshape, devicelab.cli.proxy, devicelab.journal; "
        "assert 'mitmproxy' not in sys.modules and 'aiohttp' not in sys.modules; "
        "import devicelab.netshape as n; "
        "assert sorted(n.__all__) == ['FlowRecord', 'NetShape', 'ShapedProxy', 'measure']; "
        "[getattr(n, name) for name in n.__all__]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_taken_port_is_one_line_and_exit_3() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*DEVICELAB, "proxy", "--network", "4g", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 3
    # Nothing else: not mitmproxy's own advice (its --mode flag), no warning, no traceback,
    # and no "Task was destroyed" from a shutdown racing the loop's end (that race also
    # made the error wait 10 s).
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "devicelab proxy: network profile: 4g",
        f"devicelab: error: cannot listen on 127.0.0.1:{port}: address already in use"
        " (hint: pick a free port (0 picks one) and a local address)",
    ]


def test_with_loss_the_check_measures_what_the_loss_model_predicts(make_profile: Any) -> None:
    """docs/netshape.md's loss model (a lost segment is sent again and costs a round trip)
    predicts the rate a lossy link leaves; `proxy check` prints it beside the achieved one,
    so -90 % at 10 % loss reads as the model working, not as a broken proxy."""
    from devicelab.netshape.selfcheck import loss_bound_kbps, measure

    profile = make_profile(50, 2000, 2000).model_copy(update={"loss_pct": 5.0})
    bound = loss_bound_kbps(profile)
    assert bound is not None and bound[0] == pytest.approx(1353, rel=0.01)
    assert loss_bound_kbps(make_profile(50, 2000, 2000)) is None
    achieved = measure(profile)
    assert achieved.down_kbps is not None and achieved.up_kbps is not None
    # Losses are random (about 9 in each 1-second transfer here, so each rate varies by
    # ~15 %): the mean of the two directions is near the bound, far from 2000 kbps.
    assert (achieved.down_kbps + achieved.up_kbps) / 2 == pytest.approx(bound[0], rel=0.3)
    assert max(achieved.down_kbps, achieved.up_kbps) < 1900


def test_on_a_lossy_link_the_rtt_leaves_out_round_trips_that_met_a_loss(
    make_profile: Any,
) -> None:
    """A round trip that meets a loss takes a whole RTT more; the median of five of them was
    the doubled RTT about one run in eight at 10 % loss. Scripted round trips first (three
    of five met a loss), then a real lossy link."""
    import asyncio

    from devicelab.netshape.selfcheck import link_rtt, measure

    lossy = make_profile(100, 256, 256).model_copy(update={"loss_pct": 30.0})
    scripted = iter([0.21, 0.20, 0.11, 0.21, 0.10, 0.31, 0.10, 0.11, 0.12, 0.2, 0.1])

    async def round_trip() -> float:
        return next(scripted)

    assert asyncio.run(link_rtt(round_trip, lossy)) == pytest.approx(0.11)
    # All of the first five met a loss: alike, but a whole RTT over the profile's.
    scripted = iter([0.21, 0.20, 0.21, 0.22, 0.21, 0.10, 0.21, 0.11, 0.10, 0.12, 0.11])
    assert asyncio.run(link_rtt(round_trip, lossy)) == pytest.approx(0.11)
    # Without loss the median of five is kept as it was.
    scripted = iter([0.21, 0.20, 0.11, 0.21, 0.10])
    assert asyncio.run(link_rtt(round_trip, make_profile(100, 256, 256))) == 0.2
    # Through a real proxy: 30 % loss each way, so most tiny round trips meet one.
    achieved = measure(lossy)
    assert 100 <= achieved.rtt_ms < 150


def test_a_loopback_listen_address_that_no_allowed_client_can_reach_is_said_at_start() -> None:
    process = subprocess.Popen(
        [*DEVICELAB, "proxy", "--listen", "127.0.0.1:0", "--allow", "10.0.0.0/8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith("listening on 127.0.0.1:")
        lines = [process.stdout.readline() for _ in range(2)]
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    (warning,) = [line for line in err.splitlines() if "no allowed client" in line]
    assert "--allow 10.0.0.0/8 leaves loopback out" in warning
    printed = "".join(lines) + out
    assert "curl" not in printed and "adb reverse" not in printed
    assert "allowed clients: 10.0.0.0/8 (none can reach 127.0.0.1)" in printed


@pytest.mark.slow
def test_a_reader_that_closes_stdout_after_the_address_leaves_the_proxy_serving(
    upstream: Any,
) -> None:
    process = subprocess.Popen(
        [*DEVICELAB, "proxy", "--network", "5g", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().rsplit(":", 1)[1])
        process.stdout.close()  # the script had what it wanted
        time.sleep(0.5)  # the rest of the printout meets the closed pipe
        assert process.poll() is None, "it ended when its reader left"
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
        )
        with opener.open(f"{upstream.base}/bytes?n=10", timeout=10) as response:
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_allowing_the_internet_on_a_lan_address_is_warned_of_as_an_open_proxy() -> None:
    process = subprocess.Popen(
        [*DEVICELAB, "proxy", "--listen", "0.0.0.0:0", "--allow", "10.0.0.0/8",
         "--allow", "0.0.0.0/0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("listening on 0.0.0.0:")
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    (warning,) = [line for line in err.splitlines() if "open proxy" in line]
    assert "--allow 0.0.0.0/0 lets addresses of the internet use this proxy" in warning


def test_the_printed_android_steps_route_and_unroute_a_phone_and_ios_is_told_of_loopback(
    adb_server: Any, fake: Any, tmp_path: Path
) -> None:
    """What the printout tells a user to type, typed into the real adb against the fake
    phone: the undo leaves the phone as it was (the reverse too)."""
    import shlex

    env = {**adb_server.env, "DEVICELAB_STATE": str(tmp_path / "state")}
    with (tmp_path / "stderr").open("w") as stderr:
        process = subprocess.Popen(
            [*DEVICELAB, "proxy", "--network", "none", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(6)]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("no stop after SIGTERM: " + (tmp_path / "stderr").read_text()[-4000:])
    port = lines[0].strip().rsplit(":", 1)[1]
    route = next(line for line in lines if "android (USB):" in line).split(":", 1)[1]
    undo = next(line for line in lines if "undo:" in line).split(":", 1)[1]
    ios = next(line for line in lines if "ios:" in line)

    def type_in(steps: str) -> None:
        for step in steps.split("&&"):
            argv = shlex.split(step)
            assert argv[0] == "adb"
            adb_server.run("-s", fake.serial, *argv[1:])

    fake.settings["global"]["http_proxy"] = ":0"
    type_in(route)
    assert fake.reverses == {f"tcp:{port}": f"tcp:{port}"}
    assert fake.settings["global"]["http_proxy"] == f"127.0.0.1:{port}"
    type_in(undo)
    assert fake.reverses == {} and fake.settings["global"]["http_proxy"] == ":0"
    # A phone cannot reach this machine's loopback over Wi-Fi.
    assert "Manual: 127.0.0.1" not in ios
    assert f"--listen 0.0.0.0:{port}" in ios and "--allow" in ios


def test_a_proxy_whose_clean_stop_hangs_still_exits_and_says_where_it_hung() -> None:
    """SIGTERM must end the foreground proxy: when its clean stop hangs, it exits with 3
    after the grace and prints its threads' stacks, rather than holding the port forever."""
    script = (
        "import logging, time, devicelab.netshape.serve as serve\n"
        "logging.basicConfig()\n"
        "serve._STOP_GRACE_S = 0.5\n"
        "def hang(self):\n"
        "    time.sleep(60)\n"
        "serve.ShapedProxy.stop = hang\n"
        "serve.run_foreground(None, listen=('127.0.0.1', 0), instructions=False)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("listening on 127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 3
    assert "did not stop within 0.5 s of the signal" in err
    assert "in hang" in err and "in run_foreground" in err  # where it hung
    # Its stderr a full pipe nobody reads: the telling blocks, the exit does not.
    full = script.replace("logging.basicConfig()\n", "logging.basicConfig()\n"
                          "import sys, threading\n"
                          "threading.Thread(target=lambda: sys.stderr.write('x' * 200_000),"
                          " daemon=True).start()\n")  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", full], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("listening on 127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 3
    finally:
        process.kill()
        process.communicate()


def test_listen_addresses_are_read_or_refused_as_bad_input() -> None:
    from devicelab.errors import BadInput
    from devicelab.netshape.serve import parse_listen

    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen(" 127.0.0.1:0 ") == ("127.0.0.1", 0)  # pasted with a space
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen(":8080") == ("127.0.0.1", 8080)
    bad_ones = ["8080", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", "127. 0.0.1:80"]
    # A bracket without its pair was read as ::1 ("[::1:80"), or as the default ("[]:80").
    bad_ones += ["[::1:80", "::1]:80", "[[::1]]:80", "[]:80"]
    for bad in bad_ones:
        with pytest.raises(BadInput, match="is not HOST:PORT"):
            parse_listen(bad)
    # Without brackets an IPv6 host was cut at its last colon: "::1:80" read as ::1, port
    # 80, though it is also the address ::1:80.
    for ambiguous in ["::1:80", "::1:8080", "fe80::1:0"]:
        with pytest.raises(BadInput, match="ambiguous: an IPv6 address takes brackets") as err:
            parse_listen(ambiguous)
        assert "[" in (err.value.hint or "")


def _refused(*args: str) -> subprocess.CompletedProcess[str]:
    """``devicelab proxy ARGS`` run to its end (it is expected to refuse at once)."""
    return subprocess.run(
        [*DEVICELAB, "proxy", "--network", "4g", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("listen", "said"),
    [
        ("999.1.1.1:80", "--listen '999.1.1.1:80': 999.1.1.1 is not an IP address"),
        ("1.2.3:80", "--listen '1.2.3:80': 1.2.3 is not an IP address"),
        ("[::1::2]:80", "--listen '[::1::2]:80': ::1::2 is not an IP address"),
        # TEST-NET-2 (RFC 5737): an address, but none of this machine's.
        (
            "198.51.100.1:18470",
            "cannot listen on 198.51.100.1:18470: not an address of this machine",
        ),
    ],
)
def test_a_listen_host_that_is_no_address_of_this_machine_is_one_line_and_exit_2(
    listen: str, said: str
) -> None:
    result = _refused("--listen", listen)
    assert result.returncode == 2, result.stderr
    # One line, before the proxy starts (no "network profile" line), with a hint that fits.
    assert result.stderr.splitlines() == [
        f"devicelab: error: {said} (hint: listen on an IP address of this machine (`ip addr`),"
        " 127.0.0.1 (this machine only), 0.0.0.0 (all its IPv4 addresses) or a name that"
        " resolves to one)"
    ]


def test_a_listen_name_that_does_not_resolve_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from devicelab.errors import BadInput
    from devicelab.netshape import serve

    def no_such_name(*_args: object, **_kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)  # no DNS in a test
    with pytest.raises(BadInput) as caught:
        serve.parse_listen("nonexist.invalid:8080")
    assert caught.value.one_line() == (
        "--listen 'nonexist.invalid:8080': nonexist.invalid does not resolve (name or service"
        " not known) (hint: listen on an IP address of this machine (`ip addr`), 127.0.0.1"
        " (this machine only), 0.0.0.0 (all its IPv4 addresses) or a name that resolves to one)"
    )
    monkeypatch.undo()
    assert serve.parse_listen("localhost:0") == ("localhost", 0)


@pytest.mark.parametrize(
    ("allow", "said"),
    [
        (["foo"], "--allow 'foo' is not a network (hint: give a CIDR such as 192.168.1.0/24,"
                  " or one address such as 10.0.0.5)"),
        (["10.0.0.0/8,192.168.0.0/16"], "--allow '10.0.0.0/8,192.168.0.0/16' holds several"
         " networks (hint: repeat --allow, one network each: --allow 10.0.0.0/8 --allow"
         " 192.168.0.0/16)"),
        (["127.0.0.0/8", "10.0.0.1/8"], "--allow '10.0.0.1/8' has host bits set (hint: for the"
         " network say --allow 10.0.0.0/8; for that one address --allow 10.0.0.1/32)"),
    ],
)  # fmt: skip
def test_an_allow_entry_that_is_no_network_is_one_line_naming_allow_and_exit_2(
    allow: list[str], said: str
) -> None:
    result = _refused("--listen", "127.0.0.1:0", *(f"--allow={a}" for a in allow))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"devicelab: error: {said}"]


def test_one_address_or_a_network_is_a_good_allow_entry() -> None:
    from devicelab.netshape.serve import parse_allow

    assert parse_allow(["10.0.0.5", " 10.0.0.0/8", "::1/128"]) == ["10.0.0.5", "10.0.0.0/8",
                                                                   "::1/128"]  # fmt: skip


def test_a_lan_proxy_that_leaves_loopback_out_prints_no_step_that_loopback_takes() -> None:
    process = subprocess.Popen(
        [*DEVICELAB, "proxy", "--listen", "0.0.0.0:0", "--allow", "10.0.0.0/8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("listening on 0.0.0.0:")
        lines = [process.stdout.readline() for _ in range(4)]
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
    printed = "".join(lines) + out
    # Playwright here and adb reverse connect from 127.0.0.1, which would be refused.
    assert "127.0.0.1" not in printed.replace("--allow 127.0.0.1/32", "")
    assert "adb reverse tcp:" not in printed
    web = next(line for line in printed.splitlines() if "web (Playwright):" in line)
    assert "<this machine's LAN address>" in web and "add --allow 127.0.0.1/32" in web
    android = next(line for line in printed.splitlines() if "android (USB):" in line)
    assert "add --allow 127.0.0.1/32" in android
