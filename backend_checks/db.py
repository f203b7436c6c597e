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
    import psycopg

    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=connect_timeout,
            application_name="devicelab",
            options=f"-c statement_timeout={int(timeout_ms)}",
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


def ensure_database(dsn: str) -> str | None:
    """Create the database ``dsn`` names when the server lacks it; return its name when
    created, None when it was there (or the DSN names none).

    Asks the server's ``postgres`` database (``template1`` when that one is closed to us)
    whether the database exists; when neither answers, returns None and leaves the error
    to the connection that follows. Raises BackendUnavailable when the database is missing
    and we may not create it.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return None  # connect() gives the one-line error for a bad DSN
    name = params.get("dbname")
    if not name:
        return None
    for maintenance in ("postgres", "template1"):
        if maintenance == name:
            return None
        try:
            conn = connect(make_conninfo(dsn, dbname=maintenance), autocommit=True)
        except BackendUnavailable as exc:
            if "does not exist" in exc.message or "permission denied" in exc.message:
                continue  # this server has no (open) postgres database: try template1
            return None  # unreachable: the connection that follows says so, once
        with conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone():
                return None
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
            except psycopg.Error as exc:
                raise BackendUnavailable(
                    f"database {name!r} does not exist and cannot be created: "
                    + redact(str(exc).strip().splitlines()[0], dsn),
                    hint=f"create it (createdb {name}) or name an existing database in the DSN",
                ) from None
            return str(name)
    return None


def drop_database(dsn: str) -> None:
    """Drop the database ``dsn`` names (one :func:`ensure_database` created for a run that
    then failed), from the server's ``postgres`` database. Best effort: never raises."""
    import logging

    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        name = conninfo_to_dict(dsn).get("dbname")
        if not name or name in ("postgres", "template1"):
            return
        with connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
            )
    except (BackendUnavailable, psycopg.Error) as exc:
        logging.getLogger(__name__).warning("could not drop database: %s", redact(str(exc), dsn))
