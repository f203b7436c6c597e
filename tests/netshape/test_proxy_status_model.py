"""The proxy's state is a typed ProxyStatus (STYLE.md habit 6), in both proxy modes, and
the control endpoint's ``GET status`` still answers the same JSON, byte for byte."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from devicelab.models import NetworkProfile, ProxyStatus
from devicelab.netshape.proxy import ShapedProxy


async def _control_status(proxy: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get("http://netshape.devicelab/status", proxy=proxy) as response,
    ):
        return response.status, await response.read()


def test_status_is_a_model_and_the_endpoint_keeps_its_json(make_profile: Any) -> None:
    profile = make_profile(40, 8000, None)
    with ShapedProxy(profile) as proxy:
        status = proxy.status()
        assert isinstance(status, ProxyStatus)
        assert (status.profile, status.offline, status.links) == (profile, False, {})
        code, body = asyncio.run(_control_status(proxy.url))
        proxy.go_offline()
        assert proxy.status().offline is True
    assert code == 200
    # The body as it was when the addon built a dict: the profile's model_dump, then
    # offline, then links (the asking client is on the link while it asks).
    before = {"profile": profile.model_dump(), "offline": False, "links": {"127.0.0.1": 1}}
    assert body == json.dumps(before).encode()


def test_an_unshaped_proxy_says_so_in_its_status() -> None:
    with ShapedProxy(None) as proxy:
        code, body = asyncio.run(_control_status(proxy.url))
        assert proxy.status().profile is None
    assert code == 200
    assert body == b'{"profile": null, "offline": false, "links": {"127.0.0.1": 1}}'


@pytest.mark.slow
def test_a_subprocess_proxy_answers_the_same_model(make_profile: Any) -> None:
    profile = make_profile(25, None, 2000)
    with ShapedProxy(profile, mode="subprocess") as proxy:
        status = proxy.status()
        proxy.go_offline()
        cut = proxy.status()
    assert isinstance(status, ProxyStatus) and isinstance(status.profile, NetworkProfile)
    assert (status.profile, status.offline, status.links) == (profile, False, {})
    assert cut.offline is True


def test_a_status_is_frozen_and_refuses_unknown_fields() -> None:
    status = ProxyStatus(profile=None, offline=False)
    assert status.links == {}
    with pytest.raises(ValidationError):
        status.offline = True  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ProxyStatus.model_validate({"profile": None, "offline": False, "clients": {}})
