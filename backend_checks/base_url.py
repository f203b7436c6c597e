"""A Supabase API's base URL, as ``backend check --supabase-url`` and ``backend load --url``
take it: one validator for both, so a URL one command refuses the other does not send
requests to.

The base URL is ``http(s)://host[:port][/path]``: the clients add ``/auth/v1``,
``/rest/v1``, ``/storage/v1`` and ``/realtime/v1`` themselves. What is wrong with a URL
is known before any request: bad input (exit 2), one line that never shows a password
or a key (the URL is masked before it is cut short).
"""

from __future__ import annotations

import re
import urllib.parse

from backend_checks.db import redact
from devicelab.errors import BadInput

__all__ = ["BASE_HINT", "URL_OPTION", "check_base_url", "shown_url"]

#: What a project's base URL is, for the hints of a bad one.
BASE_HINT = "give the project's base URL, e.g. https://abc.supabase.co, without /rest/v1"
#: The URL option as messages name it: ``backend check`` and ``backend load`` take both
#: spellings, and Click's public API does not say which one was typed.
URL_OPTION = "--url/--supabase-url"
#: The services' own paths: a base URL ending in one is the endpoint, not the base.
_SERVICES = ("/rest/v1", "/auth/v1", "/storage/v1", "/realtime/v1")
_QUERY_VALUE = re.compile(r"(?P<pre>[?&;][^=&#;\s]*=)[^&#;\s]*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*){0,2}")
_SHOWN = 80


def shown_url(url: str) -> str:
    """``url`` as a message may show it: no password, no query value (``?apikey=***``), no
    JWT, then cut to 80 characters (masked first: a cut never leaves a key's prefix).
    Raises nothing."""
    masked = redact(_QUERY_VALUE.sub(lambda m: m.group("pre") + "***", _JWT.sub("***", url)))
    return masked if len(masked) <= _SHOWN else masked[: _SHOWN - 3] + "..."


def check_base_url(url: str, flag: str) -> str:
    """``url`` stripped of blanks and a trailing slash, once it is usable as an API base
    URL; ``flag`` names the option it came from in the messages (``--url`` or
    ``--supabase-url`` is named as :data:`URL_OPTION`: either may have been typed).

    Raises BadInput (exit 2, before any request): not http(s), no host, a user or password
    in it (the API takes the anon key, never URL credentials), a port that is not a number
    (an IPv6 address without brackets), a query or a fragment, or a path that ends in a
    service's own path (``/rest/v1``, ``/auth/v1``): the clients add those.
    """
    url = url.strip()
    flag = URL_OPTION if flag in ("--url", "--supabase-url") else flag
    shown = shown_url(url)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadInput(
            f"bad {flag} {shown!r}: not an http(s) URL",
            hint="give the project's API URL with its scheme, e.g. https://abc.supabase.co",
        )
    if parts.username is not None or parts.password is not None:
        raise BadInput(
            f"bad {flag} {shown!r}: it holds a user or password; the API takes none there",
            hint="give the project's base URL (https://abc.supabase.co) and the anon key"
            " (--anon-key or SUPABASE_ANON_KEY)",
        )
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        host = parts.hostname
    except ValueError:
        host = None
    if not host or (":" in host and "[" not in parts.netloc):
        raise BadInput(
            f"bad {flag} {shown!r}: no host and port can be read from it",
            hint="an IPv6 address goes in brackets, e.g. http://[::1]:54321",
        )
    if parts.query or "?" in url.split("#", 1)[0]:
        raise BadInput(
            f"bad {flag} {shown!r}: a base URL has no query (the anon key goes in --anon-key)",
            hint=BASE_HINT,
        )
    if parts.fragment or url.endswith("#"):
        raise BadInput(f"bad {flag} {shown!r}: a base URL has no #fragment", hint=BASE_HINT)
    path = parts.path.rstrip("/")
    for service in _SERVICES:
        if path.endswith(service):
            raise BadInput(
                f"bad {flag} {shown!r}: that is the {service} endpoint, not the API's base URL",
                hint=f"give the project's base URL, e.g. https://abc.supabase.co, without"
                f" {service}",
            )
    return url.rstrip("/")
