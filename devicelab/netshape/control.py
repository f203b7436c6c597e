"""The proxy's control endpoint, ``http://netshape.devicelab/`` (``CONTROL_HOST``): any
allowed client changes the link through the proxy itself, without a restart.

    GET  status               the addon's state (profile, offline, links)
    GET  records              the flow timing records so far
    POST profile              body: a NetworkProfile as JSON, the name of one of
                              ``netshape_networks``, or ``none`` (no shaping)
    POST offline?seconds=N    cut the link for N seconds (no N: until online)
    POST online               bring it back

The NetShape addon (``addon``) hands each request for the control host to ``answer``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from mitmproxy import ctx, exceptions, http

from devicelab.models.network import NetworkProfile
from devicelab.netshape.options import CONTROL_HOST

if TYPE_CHECKING:
    from devicelab.netshape.addon import NetShape

__all__ = ["CONTROL_HOST", "answer", "profile_text"]


def answer(addon: NetShape, flow: http.HTTPFlow, networks: Mapping[str, NetworkProfile]) -> None:
    """Do what ``flow`` asks of ``addon`` and set its response: 200 with JSON, 400 with
    the error for a value refused, 404 for an unknown action. ``networks`` are the
    profiles ``POST profile`` takes by name."""
    req = flow.request
    action = req.path.split("?")[0].strip("/")
    status, body = 200, cast(dict[str, Any], {"ok": True})
    try:
        if action == "status" and req.method == "GET":
            body = addon.status().model_dump(mode="json")
        elif action == "records" and req.method == "GET":
            body = {"records": [r.to_dict() for r in addon.records()]}
        elif action == "profile" and req.method == "POST":
            options: Any = ctx.options
            options.update(netshape_profile=profile_text(req.get_text() or "", networks))
        elif action == "offline" and req.method == "POST":
            seconds = req.query.get("seconds")
            addon.go_offline(float(seconds) if seconds else None)
        elif action == "online" and req.method == "POST":
            addon.go_online()
        else:
            status, body = 404, {"error": f"no control action {req.method} /{action}"}
    except (exceptions.OptionsError, ValueError) as exc:
        status, body = 400, {"error": str(exc)}
    flow.response = http.Response.make(
        status, json.dumps(body), {"content-type": "application/json"}
    )


def profile_text(body: str, networks: Mapping[str, NetworkProfile]) -> str:
    """The profile JSON a ``POST profile`` body asks for: the body itself (a profile),
    the profile of that name in ``networks``, or "" for "none" (no shaping). Raises
    ValueError (an unknown name, or no body: a bare ``curl -X POST`` must not switch
    shaping off)."""
    name = body.strip()
    if name.startswith("{"):
        return body
    if name == "none" and name not in networks:
        return ""
    if name not in networks:
        known = ", ".join(sorted(networks)) or "none (give a profile as JSON)"
        if not name:
            raise ValueError(
                f"say which network: a name (known: {known}), 'none' for no shaping, "
                "or a profile as JSON"
            )
        raise ValueError(f"unknown network {name!r}; known: {known}")
    return networks[name].model_dump_json()
