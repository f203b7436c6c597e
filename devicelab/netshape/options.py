"""The NetShape addon's options: their declaration (``declare``, called by
``NetShape.load``, with their type, default and help) and their parsers, each returning
the value ready to use or raising mitmproxy's OptionsError with the option's name; and
the check of the seconds ``go_offline`` takes (the control endpoint's
``offline?seconds=N``)."""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

from mitmproxy import exceptions
from pydantic import ValidationError

from devicelab.errors import BadInput
from devicelab.models.network import NetworkProfile, profile_problem

__all__ = [
    "CONTROL_HOST",
    "DEFAULT_ALLOW",
    "allow_networks",
    "bad_option",
    "check_offline_seconds",
    "declare",
    "dump_networks",
    "parse_aliases",
    "parse_allow",
    "parse_networks",
    "parse_profile",
]

#: The host of the proxy's own control endpoint.
CONTROL_HOST = "netshape.devicelab"
#: ``netshape_allow``'s default: clients on this machine only.
DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")


def declare(loader: Any) -> None:
    """Declare the NetShape addon's options on mitmproxy's ``loader`` (``NetShape.load``):
    each with its type, default and help."""
    loader.add_option(
        "netshape_profile", str, "", "The network profile to emulate, as NetworkProfile JSON."
    )
    loader.add_option(
        "netshape_allow",
        Sequence[str],
        list(DEFAULT_ALLOW),
        "Client networks (CIDR) allowed to use the proxy; every other client is refused.",
    )
    loader.add_option(
        "netshape_ws_history", int, 200, "WebSocket messages kept per flow (older dropped)."
    )
    loader.add_option("netshape_records", int, 10_000, "Flow timing records kept.")
    loader.add_option(
        "netshape_networks",
        str,
        "",
        "Named network profiles, a JSON object of NetworkProfile by name: the control"
        " endpoint's POST profile takes one of these names as well as a profile.",
    )
    loader.add_option(
        "netshape_aliases",
        Sequence[str],
        [],
        "NAME=HOST: requests for host NAME go to HOST (same port). A lab backend on the"
        " proxy's loopback gets a name that only the proxy resolves, so a device reaches"
        " it through the shaped link or not at all.",
    )


def bad_option(message: str) -> Exception:
    """mitmproxy's OptionsError (untyped in mitmproxy) carrying ``message``."""
    error: Any = exceptions.OptionsError
    return cast(Exception, error(message))


def check_offline_seconds(seconds: object) -> None:
    """Raise ValueError unless ``seconds`` is None (until told) or a positive number: -3,
    NaN or infinity would cut every connection and come back at once, or never; "5" (a
    TypeError further on) and True (taken as 1 s) are not numbers here."""
    if seconds is None:
        return
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"offline seconds must be a positive number, not {seconds!r}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"offline seconds must be a positive number, not {seconds:g}")


def parse_profile(text: str) -> NetworkProfile | None:
    """``netshape_profile``: returns the NetworkProfile its JSON holds, or None for ""
    (no shaping). Raises mitmproxy's OptionsError, naming the option, when the JSON is
    not a valid NetworkProfile."""
    if not text.strip():
        return None
    try:
        return NetworkProfile.model_validate_json(text)
    except ValidationError as exc:
        raise bad_option(f"netshape_profile: {profile_problem(exc)}") from exc


def parse_allow(
    cidrs: Sequence[str],
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``netshape_allow``: returns the client networks (at least one). Raises mitmproxy's
    OptionsError, naming the option, when an entry is not a network or has host bits set,
    or none is given (``allow_networks``'s words)."""
    try:
        return allow_networks(cidrs)
    except BadInput as exc:
        raise bad_option(exc.one_line()) from exc


def allow_networks(
    cidrs: Sequence[str], *, name: str = "netshape_allow", say: str = ""
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The client networks of an allow-list (each entry a CIDR or one address), the one
    reading of it: ``netshape_allow``, ``ShapedProxy(allow=...)`` and ``--allow``. Raises
    BadInput naming ``name`` when an entry is no network, when one has host bits set
    (``10.0.0.1/8``: the hint offers both readings, each after ``say``), or when there
    is none."""
    networks = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise BadInput(
                f"{name} {cidr!r} is not a network",
                hint="give a CIDR such as 192.168.1.0/24, or one address such as 10.0.0.5",
            ) from None
        # strict=False reads 10.0.0.1/8 as 10.0.0.0/8, which may not be what was meant.
        address = ipaddress.ip_address(cidr.strip().partition("/")[0])
        if address != network.network_address:
            one = f"{address}/{network.max_prefixlen}"
            raise BadInput(
                f"{name} {cidr!r} has host bits set",
                hint=f"for the network say {say}{network}; for that one address {say}{one}",
            )
        networks.append(network)
    if not networks:
        raise BadInput(
            f"{name} is empty: no client could connect",
            hint="allow at least one client network, e.g. 127.0.0.0/8",
        )
    return networks


def parse_networks(text: str) -> dict[str, NetworkProfile]:
    """``netshape_networks``: returns the NetworkProfile of each name its JSON object
    holds ({} for ""). Raises mitmproxy's OptionsError, naming the option, when the text
    is not a JSON object or a value is not a valid NetworkProfile."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return {str(k): NetworkProfile.model_validate(v) for k, v in raw.items()}
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        text = profile_problem(exc) if isinstance(exc, ValidationError) else str(exc)
        raise bad_option(f"netshape_networks: {text}") from exc


def dump_networks(networks: Mapping[str, NetworkProfile]) -> str:
    """``netshape_networks`` as given to mitmproxy or the serve process: the JSON that
    ``parse_networks`` reads ("" for none)."""
    if not networks:
        return ""
    return json.dumps({k: v.model_dump(mode="json") for k, v in networks.items()})


def parse_aliases(entries: Sequence[str]) -> dict[str, str]:
    """``netshape_aliases``: returns the NAME=HOST entries as name -> host (names
    lower-cased). Raises mitmproxy's OptionsError, naming the option, when an entry is
    not NAME=HOST (a host with "/", a name with ":") or names the proxy's own host."""
    aliases = {}
    for entry in entries:
        name, sep, host = entry.partition("=")
        name, host = name.strip().lower(), host.strip()
        if not sep or not name or not host or "/" in host or ":" in name:
            raise bad_option(f"netshape_aliases: {entry!r} is not NAME=HOST")
        if name == CONTROL_HOST:
            raise bad_option(f"netshape_aliases: {CONTROL_HOST} is the proxy's own")
        aliases[name] = host
    return aliases
