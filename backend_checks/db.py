"""Connections to PostgreSQL: the one place psycopg errors become devicelab errors.

Every connection carries a ``statement_timeout`` (nothing we run may hang a server) and an
``application_name`` of ``devicelab``. DSNs are redacted before they reach a message:
``password=...`` and ``user:secret@`` forms both, and the password's own text wherever
libpq echoes a piece of the DSN back.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from devicelab.errors import BackendUnavailable

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "connect",
    "drop_database",
    "ensure_database",
    "password_of",
    "redact",
]

DEFAULT_TIMEOUT_MS = 30_000

# A URL password cannot hold '@' or '/' unescaped; anything else up to the '@' is the
# secret (spaces included: over-redacting a malformed DSN is fine, leaking it is not).
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@/\n]*)(?=@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<pre>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<pre>[?&]password=)(?P<pw>[^&\s]*)", re.I)


def password_of(dsn: str) -> str | None:
    """The password a DSN holds (URL or key=value form), or None."""
    for pattern in (_URL_PASSWORD, _KV_PASSWORD, _QUERY_PASSWORD):
        match = pattern.search(dsn)
        if match and match.group("pw"):
            return match.group("pw").strip("'")
    return None


def redact(text: str, dsn: str | None = None) -> str:
    """``text`` with every password replaced by ``***``: the DSN forms, and the literal
    password of ``dsn`` wherever it appears (libpq quotes pieces of bad DSNs back)."""
    secret = password_of(dsn) if dsn else None
    if secret and len(secret) >= 2:
        text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + "***", text)
    text = _KV_PASSWORD.sub(lambda m: m.group("pre") + "***", text)
    return _QUERY_PASSWORD.sub(lambda m: m.group("pre") + "***", text)


def connect(
    dsn: str,
    *,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    autocommit: bool = False,
    connect_timeout: int = 10,
) -> psycopg.Connection[Any]:
    """A psycopg connection to ``dsn`` with a statement_timeout.

    Raises BackendUnavailable when the DSN cannot be parsed or the server cannot be reached
    or refuses us; the message never holds the password. The psycopg error is not chained
    (``from None``): its text may quote the password back.
    """
    import os

    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(dsn)
        # Keyword arguments replace the DSN's own values: keep its options (PGOPTIONS when
        # it has none, as libpq would) and its connect_timeout, and add ours.
        theirs = str(given.get("options") or os.environ.get("PGOPTIONS", ""))
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=given.get("connect_timeout", connect_timeout),
            application_name="devicelab",
            options=f"{theirs} -c statement_timeout={int(timeout_ms)}".strip(),
        )
    except psycopg.ProgrammingError as exc:
        detail = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "", dsn)
        # Exit 3 like an unreachable server: for the caller, either way there is no backend.
        raise BackendUnavailable(
            f"invalid DSN {redact(dsn, dsn)!r}: {detail}",
            hint="use postgresql://user:password@host:port/dbname or 'host=... dbname=...'",
        ) from None
    except psycopg.Error as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        # libpq lists one "connection to server ... failed: why" line per address tried,
        # each followed by advice; the last "failed:" line names the final reason.
        failed = [line for line in lines if "failed:" in line]
        detail = (failed or lines or [type(exc).__name__])[-1].removeprefix("connection failed: ")
        detail = redact(detail, dsn)
        raise BackendUnavailable(
            f"cannot connect to {redact(dsn, dsn)}: {detail}",
            hint="check that the server runs and the DSN (host, port, user, password, dbname)",
        ) from None


def _maintenance(dsn: str) -> psycopg.Connection[Any] | None:
    """An autocommit connection to the server of ``dsn``, in its ``postgres`` database
    (``template1`` when that one is missing or closed to us); None when neither answers
    (the caller's own connection then says why, once)."""
    from psycopg.conninfo import make_conninfo

    for name in ("postgres", "template1"):
        try:
            return connect(make_conninfo(dsn, dbname=name), autocommit=True)
        except BackendUnavailable as exc:
            if "does not exist" not in exc.message and "permission denied" not in exc.message:
                return None  # unreachable, or refused for another reason
    return None


def _dbname(dsn: str) -> str | None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        name = conninfo_to_dict(dsn).get("dbname")
    except psycopg.ProgrammingError:
        return None  # connect() gives the one-line error for a bad DSN
    return str(name) if name else None


def ensure_database(dsn: str) -> str | None:
    """Create the database ``dsn`` names when the server lacks it; return its name when
    created, None when it was there, the DSN names none, or the server does not answer
    (the connection that follows reports that). Raises BackendUnavailable when the
    database is missing and we may not create it."""
    import psycopg
    from psycopg import sql

    name = _dbname(dsn)
    conn = _maintenance(dsn) if name else None
    if name is None or conn is None:
        return None
    with conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return None
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise BackendUnavailable(
                f"database {name!r} does not exist and cannot be created: "
                + redact(str(exc).strip().splitlines()[0], dsn),
                hint=f"create it (createdb {name}) or name an existing database in the DSN",
            ) from None
    return name


def drop_database(dsn: str) -> None:
    """Drop the database ``dsn`` names (one :func:`ensure_database` created for a run that
    then failed). Best effort: logs and never raises."""
    import logging

    import psycopg
    from psycopg import sql

    name = _dbname(dsn)
    if name is None or name in ("postgres", "template1"):
        return
    conn = _maintenance(dsn)
    try:
        if conn is None:
            raise BackendUnavailable("the server does not answer")
        with conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    except (BackendUnavailable, psycopg.Error) as exc:
        logging.getLogger(__name__).warning(
            "could not drop database %s: %s", name, redact(str(exc), dsn)
        )
