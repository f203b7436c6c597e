"""ShapedProxy's subprocess mode (what `devicelab run`, `proxy check` and the lab fixture
use): its control channel and its log, with a real mitmproxy in a child process."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from typing import Any

import aiohttp
import pytest

from devicelab.errors import BadInput
from devicelab.netshape.proxy import ShapedProxy
from tests.netshape.conftest import status_of_tiny


@pytest.mark.slow
def test_a_subprocess_proxy_keeps_serving_past_64_kb_of_log_lines(
    upstream: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Its stderr was a pipe nobody read: ~900 "refused client" lines filled it, and the
    # proxy then blocked on its next log line, its devices' traffic with it.
    caplog.set_level(logging.INFO, logger="devicelab.netshape")
    with ShapedProxy(None, allow=["127.0.0.1/32"], mode="subprocess") as proxy:
        for i in range(1200):  # ~80 bytes of log each: one line per refused client
            with socket.socket() as stranger:
                stranger.bind((f"127.0.{3 + i // 250}.{1 + i % 250}", 0))
                stranger.connect((proxy.host, proxy.port))
        assert asyncio.run(status_of_tiny(upstream, proxy.url)) == 200
        assert proxy.status().offline is False
    # Its log reached ours, as the thread mode's does.
    assert "refused client 127.0.3.1: not in the allow-list (127.0.0.1/32)" in caplog.text
    assert "refused client 127.0.7.200: not in the allow-list" in caplog.text


@pytest.mark.slow
def test_subprocess_control_needs_neither_the_allow_list_nor_the_link(make_profile: Any) -> None:
    # It went through the proxy as a client: refused where loopback is not allowed (a LAN
    # setup), and otherwise shaped, a 3 s RTT for each call, beside the device's bytes.
    slow = make_profile(3000, 400, 400)
    with ShapedProxy(slow, allow=["10.0.0.0/8"], mode="subprocess") as proxy:
        started = time.monotonic()
        proxy.set_profile(make_profile(2000, 400, 400))
        assert proxy.status().offline is False
        proxy.go_offline(30)
        assert proxy.status().offline is True
        proxy.go_online()
        assert proxy.records() == []
        assert time.monotonic() - started < 2.0  # five calls; one across the link is 2-3 s


@pytest.mark.parametrize("mode", ["thread", "subprocess"])
@pytest.mark.parametrize("seconds", [-3.0, 0.0, math.nan, math.inf])
def test_offline_takes_a_positive_number_of_seconds(mode: str, seconds: float) -> None:
    # -3 or NaN cut every connection and came back at once; inf never came back.
    with ShapedProxy(None, mode=mode) as proxy:  # type: ignore[arg-type]
        with pytest.raises(BadInput, match="positive number"):
            proxy.go_offline(seconds)
        assert proxy.status().offline is False


def test_the_control_endpoint_answers_a_bad_offline_with_400() -> None:
    async def offline(url: str, seconds: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://netshape.devicelab/offline?seconds={seconds}", proxy=url) as r,
        ):
            return r.status

    with ShapedProxy(None) as proxy:
        assert [asyncio.run(offline(proxy.url, s)) for s in ("-3", "nan", "inf")] == [400] * 3
        assert proxy.status().offline is False


@pytest.mark.slow
def test_a_bad_option_is_bad_input_in_subprocess_mode_too() -> None:
    with pytest.raises(BadInput, match="netshape_allow"):
        ShapedProxy(None, allow=["not-a-network"], mode="subprocess").start()


def test_the_printed_control_command_goes_through_an_allowed_address(make_profile: Any) -> None:
    # With --allow 192.168.1.0/24 the printed `curl -x http://127.0.0.1:PORT` was refused.
    from devicelab.netshape.serve import device_instructions

    networks = {"slow-3g": make_profile(400, 400, 400)}
    lan = ShapedProxy(None, host="0.0.0.0", port=28961, allow=["192.168.1.0/24"], networks=networks)
    (line,) = [text for text in device_instructions(lan) if "switch without a restart" in text]
    assert "(from an allowed address): curl -x http://<this machine's LAN address>:28961" in line
    local = ShapedProxy(None, port=28962, networks=networks)
    (line,) = [text for text in device_instructions(local) if "switch without a restart" in text]
    assert "restart: curl -x http://127.0.0.1:28962 -d slow-3g" in line
