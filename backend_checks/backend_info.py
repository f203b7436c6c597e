"""``run.backend`` of the backend commands' results: what the run talked to, as a URL.

``backend check`` and ``backend load`` both build it here, so the same managed cluster
reads the same in both files. The kind says what answered: ``postgres`` a plain database
(the managed cluster or ``--dsn``), ``supabase`` a Supabase API (``--url``,
``--supabase-url``), ``reference`` devicelab's reference server over HTTP (``backend
load --reference``). The URL never holds a password, a key, a query or a note.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Literal

from devicelab.models import BackendInfo

if TYPE_CHECKING:
    import psycopg

__all__ = ["BackendKind", "api_url", "backend_info", "connected_url", "database_url"]

BackendKind = Literal["reference", "supabase", "postgres"]

#: The connection parameters a database URL keeps: where the server is and who we are.
#: Everything else (sslmode, options, application_name) is no part of *which* backend,
#: and a password, in any spelling, must never be written.
_KEPT = ("host", "port", "user", "dbname")


def database_url(dsn: str) -> str | None:
    """``dsn`` (a libpq URL or key=value DSN) as ``postgresql://user@host:port/db``, with
    no password and no other parameter. A unix-socket host (a path) goes in the query,
    as libpq reads it: ``postgresql://user@/db?host=/run/pg&port=5432``.

    Returns None when libpq cannot parse ``dsn``. Raises nothing.
    """
    from psycopg import conninfo

    try:
        params = conninfo.conninfo_to_dict(dsn)
    except Exception:  # a DSN libpq refuses: no URL can be made of it
        return None
    got = {key: str(params[key]) for key in _KEPT if params.get(key) not in (None, "")}
    if "host" not in got and params.get("hostaddr"):
        got["host"] = str(params["hostaddr"])
    user = urllib.parse.quote(got["user"], safe="") + "@" if "user" in got else ""
    path = "/" + urllib.parse.quote(got.get("dbname", ""), safe="")
    hosts = got.get("host", "").split(",") if "host" in got else []
    sockets = any(h.startswith(("/", "@")) for h in hosts)
    if not hosts or sockets:
        # A socket directory is a path: libpq takes it (and its port) from the query.
        query: dict[str, str] = {key: got[key] for key in ("host", "port") if key in got}
        tail = "?" + urllib.parse.urlencode(query, safe="/,") if query else ""
        return f"postgresql://{user}{path}{tail}"
    ports = got.get("port", "").split(",")
    if len(ports) == 1:  # one port for every host, as libpq reads it
        ports *= len(hosts)
    ports += [""] * (len(hosts) - len(ports))
    authority = ",".join(
        (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
        for host, port in zip(hosts, ports, strict=False)
    )
    return f"postgresql://{user}{authority}{path}"


def connected_url(info: psycopg.ConnectionInfo) -> str | None:
    """The URL (as :func:`database_url` writes it) of the database a connection reached,
    as libpq resolved it: the DSN's values, else PGHOST, PGPORT, PGUSER, PGDATABASE, a
    service file or libpq's defaults (``--dsn dbname=x`` alone names no server, no user).
    Never the password. Returns None when the connection is closed. Raises nothing."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    try:
        given = {"host": info.host, "port": str(info.port), "user": info.user}
        return database_url(make_conninfo(**given, dbname=info.dbname))
    except psycopg.Error:  # a closed connection has no parameters left to read
        return None


def api_url(url: str) -> str | None:
    """``url`` (an http(s) API base URL, maybe followed by a note) as scheme://host:port
    with its path: no user, password, query or fragment. Returns None for anything else.
    Raises nothing."""
    parts = urllib.parse.urlsplit(url.strip().split()[0] if url.strip() else "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is no number: not a URL we can vouch for
        return None
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


def backend_info(kind: BackendKind, where: str) -> BackendInfo | None:
    """``run.backend`` for a run of ``kind`` that talked to ``where``: an http(s) URL (a
    note after it, such as the reference load's "(reference server over ...)", is
    dropped) or a DSN; several targets joined by ", " (an import of several masters' files)
    give one URL when they all name the same backend.

    Returns None when no URL can be made of ``where`` (an import whose files name no
    target, targets that differ): ``run.backend`` is then null, not a guess. Raises nothing.
    """
    if not where.strip():
        return None
    parts = where.split(", ")
    urls = {_url(part) for part in parts}
    if len(parts) > 1 and None not in urls:  # several targets, each a URL or DSN
        url = urls.pop() if len(urls) == 1 else None
    else:  # one target (a key=value DSN may hold ", " in a quoted value)
        url = _url(where)
    return None if url is None else BackendInfo(kind=kind, url=url)


def _url(where: str) -> str | None:
    if where.strip().lower().startswith(("http://", "https://")):
        return api_url(where)
    return database_url(where)
