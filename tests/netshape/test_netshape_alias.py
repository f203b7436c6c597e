"""Aliases: a name only the proxy resolves, for a lab backend on the proxy's loopback.

A phone cannot reach the lab host's 127.0.0.1 (its WebView never proxies loopback, and
its own loopback is the phone), so the run gives the app the backend under a name that
exists only inside the proxy: the app reaches it through the shaped link or not at all.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import Any

import aiohttp
import pytest

from devicelab.errors import BadInput
from devicelab.netshape.proxy import ShapedProxy

NAME = "backend.devicelab.test"
RTT = 0.1


def _aliased(base: str) -> str:
    parts = urllib.parse.urlsplit(base)
    return f"http://{NAME}:{parts.port}"


def test_an_alias_reaches_the_loopback_server_through_the_shaped_link(
    upstream: Any, make_profile: Any
) -> None:
    profile = make_profile(RTT * 1000, 8000, 4000)
    url = _aliased(upstream.base)

    async def main(proxy: str) -> tuple[int, str, float, str]:
        async with aiohttp.ClientSession() as s:
            start = time.perf_counter()
            async with s.get(f"{url}/bytes?n=10", proxy=proxy) as response:
                body = await response.read()
                elapsed = time.perf_counter() - start
            async with s.ws_connect(f"{url}/ws", proxy=proxy) as ws:
                await ws.send_str("echo")
                echoed = (await ws.receive(timeout=5)).data
        return response.status, f"{len(body)}", elapsed, echoed

    with ShapedProxy(profile, mode="subprocess", aliases={NAME: "127.0.0.1"}) as proxy:
        status, size, elapsed, echoed = asyncio.run(main(proxy.url))
    assert (status, size, echoed) == (200, "10", "echo")
    assert elapsed >= RTT - 0.005, "the aliased request did not cross the shaped link"


def test_without_the_alias_the_name_does_not_resolve(upstream: Any) -> None:
    async def main(proxy: str) -> int:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{_aliased(upstream.base)}/bytes?n=10", proxy=proxy) as response,
        ):
            return response.status

    with ShapedProxy(None) as proxy:
        assert asyncio.run(main(proxy.url)) == 502


@pytest.mark.parametrize("entry", [{"": "127.0.0.1"}, {"a:1": "127.0.0.1"}, {"x": ""}])
def test_a_bad_alias_is_bad_input(entry: dict[str, str]) -> None:
    with pytest.raises(BadInput, match="netshape_aliases"):
        ShapedProxy(None, aliases=entry).start()
