"""Connections to PostgreSQL: the one place psycopg errors become devicelab errors.

Every connection carries a ``statement_timeout`` (nothing we run may hang a server) and an
``application_name`` of ``devicelab``. DSNs are redacted before they reach a message:
``password=...`` and ``user:secret@`` forms both, and the password's own text wherever
libpq echoes a piece of the DSN back.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from devicelab.errors import BackendUnavailable, BadInput, DeviceLabError, ProbeFailed, first_line

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "connect",
    "drop_database",
    "ensure_database",
    "options_with_timeout",
    "password_of",
    "redact",
    "redact_sql",
    "translate",
]

DEFAULT_TIMEOUT_MS = 30_000

# A URL password may not hold '@' or '/' unescaped, but users write them: the secret runs
# to the *last* '@' before a '/' (greedy), so a password like p@ss is hidden whole
# (over-redacting a malformed DSN is fine, leaking a piece of it is not).
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^/\n]*)(?=@)", re.I)
_URL_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://", re.I)
_KV_PASSWORD = re.compile(r"(?P<pre>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<pre>[?&]password=)(?P<pw>[^&\s]*)", re.I)


# A URL whose scheme is missing or mistyped ("postgres:pw@h/db", "postgresql//u:pw@h",
# "postgresql:/u:pw@h") is no URL to libpq: it fails to parse it as key=value and quotes
# it back whole. Its ':' + '@' still mark a password: a word without '=' before its first
# ':' (not "host=h:5432") holding an '@' after it. A leading scheme with a '/' of its own
# ("postgresql:/", "postgresql//", "//") is dropped first when a ':' follows it, so the
# user stays readable; without a '/' the first ':' may end the user or the scheme (both
# are read), so everything after it is hidden.
_WORD = re.compile(r"[^\s'\"]+")
_MANGLED_SCHEME = re.compile(r"(?:[a-z][a-z0-9+.-]*:?)?/+", re.I)


def _bare_password(word: str) -> tuple[int, int] | None:
    """The span of the password in ``word`` when it is a ``user:password@`` without a
    well-formed ``scheme://`` in front (the password runs to the last '@', over-hiding
    rather than leaking a piece), else None."""
    colon = word.find(":")
    if colon < 0 or "=" in word[:colon] or _URL_SCHEME.search(word[: colon + 3]):
        return None
    lead = _MANGLED_SCHEME.match(word)
    if lead and ":" in word[lead.end() :]:
        colon = word.find(":", lead.end())
    at = word.rfind("@")
    return (colon + 1, at) if at > colon + 1 else None


def _bare_dsn_password(dsn: str) -> str | None:
    """The password of a DSN written ``user:password@...`` without a well-formed scheme;
    when the word with the ':' holds no '@', the password holds a space and runs to the
    next word's '@'. None when there is no such form."""
    for word in _WORD.finditer(dsn):
        span = _bare_password(word.group())
        if span is not None:
            return word.group()[span[0] : span[1]]
        text = word.group()
        colon = text.find(":")
        spaced = colon >= 0 and "@" not in text and "=" not in text[:colon]
        if spaced and not _URL_SCHEME.search(text) and (at := dsn.find("@", word.end())) > 0:
            shown = f"{text}{dsn[word.end() : at]}@"
            span = _bare_password(shown)
            return shown[span[0] : span[1]] if span else None
    return None


def password_of(dsn: str) -> str | None:
    """The password a DSN holds (URL, key=value, or a URL whose scheme is missing or
    mistyped: ``user:password@host``), or None."""
    for pattern in (_URL_PASSWORD, _KV_PASSWORD, _QUERY_PASSWORD):
        match = pattern.search(dsn)
        if match and match.group("pw"):
            return match.group("pw").strip("'")
    return _bare_dsn_password(dsn)


def _misread_userinfo(dsn: str) -> str | None:
    """The DSN as shown (user kept, password hidden) when a URL DSN's user or password
    holds an unescaped '@' or '/', else None. libpq ends the user info at the first '@'
    before the first '/', so it would take a piece of the password for the host or the
    port, and quote that piece back in its error."""
    scheme = _URL_SCHEME.match(dsn)
    if scheme is None:
        return None
    rest = dsn[scheme.end() :]
    authority, _, path = rest.partition("/")
    if (first_at := authority.find("@")) >= 0 and (query := authority.find("?", first_at)) >= 0:
        authority = authority[:query]  # no path: an '@' in the query is not the user info's
    # An '@' after the first '/' (a database name never holds one unencoded) means the
    # password held a '/': libpq would read the piece before it as the host.
    if authority.count("@") <= 1 and "@" not in path.partition("?")[0]:
        return None
    userinfo, _, host = rest.partition("?")[0].rpartition("@")
    user = userinfo.split(":", 1)[0] if ":" in userinfo else "***"
    shown = rest[len(userinfo) + 1 :] if host else rest
    return f"{dsn[: scheme.end()]}{user}:***@{shown}"


def _unparsed_shown(dsn: str) -> str:
    """A DSN libpq could not parse, as shown: a key=value DSN is cut at its password
    (a quote libpq did not read as one would spill the rest of it)."""
    match = _KV_PASSWORD.search(dsn)
    if match is None or _URL_SCHEME.match(dsn):
        return redact(dsn, dsn)
    return redact(dsn[: match.start("pw")], dsn) + "*** ..."


def _known_option_after(dsn: str, at: int) -> int:
    """Where the first ``<option>=`` after ``at`` starts whose option libpq knows (its
    conninfo keywords), or the end of ``dsn``."""
    import psycopg

    known = {o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults()}
    for word in re.finditer(r"\s+(?P<k>\w+)\s*=", dsn[at:]):
        if word.group("k").lower() in known:
            return at + word.start()
    return len(dsn)


def _scrub_quoted(detail: str, dsn: str) -> str:
    """libpq's parse error with the quoted pieces of the DSN's text from its password on
    hidden (it quotes the token it stumbled on, which may be part of the password: a
    password with a space or a quote libpq did not read as one), except a piece that sits
    only where an option's name or another option's value does (``bogus`` of ``bogus=1``,
    ``abc`` of ``connect_timeout=abc``): that is what the user must fix."""
    match = _KV_PASSWORD.search(dsn) or _URL_PASSWORD.search(dsn)
    secret = password_of(dsn)
    if match is not None:
        start, end = match.start("pw"), match.end("pw")
        if match.re is _KV_PASSWORD and not match.group("pw").startswith("'"):
            # Unquoted, it may go on past a space ("password=correct horse=battery
            # staple"): it surely ends only where a word names an option libpq knows.
            end = _known_option_after(dsn, end)
    elif secret:
        start = dsn.find(secret)
        end = start + len(secret)
    else:
        return detail

    def shown(piece: str) -> bool:
        hits = [i for i in range(len(dsn)) if dsn.startswith(piece, i)]
        if any(i < end and start < i + len(piece) for i in hits):
            return False  # a piece of the password itself
        esc = re.escape(piece)
        named = re.finditer(rf"(?:^|[\s?&])(?P<p>{esc})\s*=", dsn)
        valued = re.finditer(rf"(?:^|[\s?&])(?P<k>\w+)\s*=\s*'?(?P<p>{esc})(?=['\s&]|$)", dsn)
        plain = {m.start("p") for m in named}
        plain |= {m.start("p") for m in valued if m.group("k").lower() != "password"}
        return all(i in plain for i in hits if i >= start)

    def hide(quoted: re.Match[str]) -> str:
        piece = quoted.group(2)
        return (
            quoted.group(0) if len(piece) < 2 or shown(piece) else "***".join(quoted.group(1) * 2)
        )

    return re.sub(r"([\"'])(.*?)\1", hide, detail)


#: Where a statement gives a password as a literal: ``PASSWORD`` (CREATE or ALTER ROLE,
#: CREATE USER, a user mapping's ``OPTIONS (password '...')``) and ``crypt(``.
#: pg_stat_statements and pg_stat_activity keep utility statements' text as it was sent,
#: literals and all, in any of PostgreSQL's quotings: '...', E'...', U&'...', $$...$$,
#: $tag$...$tag$, with or without a space after the keyword. A quote before the keyword
#: makes it a literal's text (``SELECT 'password' AS kind``), not the keyword.
_SQL_SECRET_AT = re.compile(r"(?i)(?:(?<!['\"])\bpassword|\bcrypt\s*+\()\s*+")
#: A quoted literal from its opening quote: '' inside is a quote; in E'...' a backslash
#: escapes too. Possessive, so an unclosed one costs one scan, not a backtracking search.
_SQL_QUOTED = re.compile(r"(?:[eE](?=')|[uU]&(?='))?'(?:[^'\\]++|''|\\.?)*+(?:'|\Z)")
_SQL_PLAIN = re.compile(r"'(?:[^']++|'')*+(?:'|\Z)")
_SQL_DOLLAR = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*+)?\$")
#: A connection string's password (CREATE or ALTER SUBSCRIPTION ... CONNECTION '...',
#: dblink_connect('...')): ``password=value`` inside the literal, its value either quoted
#: for libpq (''...'' once the SQL literal doubles the quotes) or up to a space or the
#: literal's end.
_SQL_CONNINFO = re.compile(
    r"(?i)(?P<pre>\bpassword\s*+=\s*+)(?:''(?:[^']++|'(?!'))*+''|(?:[^\s']++|'')++)"
)


def _sql_literal_end(text: str, start: int) -> int | None:
    """Where the literal starting at ``start`` ends (the end of ``text`` when it is not
    closed: the rest is hidden), or None when no literal starts there."""
    if (dollar := _SQL_DOLLAR.match(text, start)) is not None:
        close = text.find(dollar.group(), dollar.end())
        return len(text) if close < 0 else close + len(dollar.group())
    escapes = text[start : start + 1] in ("e", "E")
    quoted = (_SQL_QUOTED if escapes else _SQL_PLAIN).match(text, start)
    if quoted is None and not escapes:
        quoted = _SQL_QUOTED.match(text, start)  # U&'...'
    return None if quoted is None else quoted.end()


def redact_sql(text: str) -> str:
    """A statement's text as reports may show it: password literals (after ``PASSWORD``
    or in ``crypt(``, in any quoting) replaced by '***', and the ``password=`` of a
    connection string by ``password=***``. Linear in the length of ``text``."""
    text = _SQL_CONNINFO.sub(lambda m: m.group("pre") + "***", text)
    parts: list[str] = []
    done = scan = 0
    while (at := _SQL_SECRET_AT.search(text, scan)) is not None:
        scan = at.end()
        end = _sql_literal_end(text, scan)
        if end is None:
            continue
        parts += [text[done:scan], "'***'"]
        done = scan = end
    parts.append(text[done:])
    return "".join(parts)


def redact(text: str, dsn: str | None = None) -> str:
    """``text`` with every password replaced by ``***``: the DSN forms, and the literal
    password of ``dsn`` wherever it appears (libpq quotes pieces of bad DSNs back)."""
    secret = password_of(dsn) if dsn else None
    if secret and len(secret) >= 2:
        text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + "***", text)
    text = _KV_PASSWORD.sub(lambda m: m.group("pre") + "***", text)
    text = _QUERY_PASSWORD.sub(lambda m: m.group("pre") + "***", text)
    return _WORD.sub(_hide_bare, text)


def _hide_bare(word: re.Match[str]) -> str:
    text = word.group()
    span = _bare_password(text)
    return text if span is None else f"{text[: span[0]]}***{text[span[1] :]}"


def options_with_timeout(given: dict[str, Any], timeout_ms: int) -> str:
    """The ``options`` to connect with, given the DSN's parameters: its own options
    (``PGOPTIONS`` when it has none, as libpq would: the keyword argument replaces both)
    with our statement_timeout after them."""
    theirs = str(given.get("options") or os.environ.get("PGOPTIONS", ""))
    return f"{theirs} -c statement_timeout={int(timeout_ms)}".strip()


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
    from psycopg.conninfo import conninfo_to_dict

    misread = _misread_userinfo(dsn)
    if misread is not None:
        raise BackendUnavailable(
            f"invalid DSN {misread!r}: an '@' or '/' in its user, password or database name "
            "is not percent-encoded, so libpq would read a piece of the password as the host",
            hint="percent-encode them in the URL ('@' is %40, '/' is %2F), or use the "
            "key=value form: 'host=... user=... password=...'",
        )
    try:
        given = conninfo_to_dict(dsn)
        # Keyword arguments replace the DSN's own values: keep its connect_timeout.
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=given.get("connect_timeout", connect_timeout),
            application_name="devicelab",
            options=options_with_timeout(given, timeout_ms),
        )
    except psycopg.ProgrammingError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = redact(_scrub_quoted(detail, dsn), dsn)
        # Exit 3 like an unreachable server: for the caller, either way there is no backend.
        raise BackendUnavailable(
            f"invalid DSN {_unparsed_shown(dsn)!r}: {detail}",
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


def translate(exc: Exception, dsn: str, doing: str) -> DeviceLabError:
    """The devicelab error for a psycopg error ``exc`` raised while ``doing`` (a phrase:
    "the backend check") on ``dsn``'s database, for the caller to raise ``from`` it; its
    message is one line without the password. Raises nothing.

    SQLSTATE class 42 (a table, column or function the statement names is not there, or
    the role may not use it) is BadInput (exit 2): the database given does not fit; a lost
    connection, a shutdown, a cancelled statement or exhausted resources (classes 08, 57,
    53) BackendUnavailable; any other error ProbeFailed (both exit 3).
    """
    import psycopg

    state = getattr(exc, "sqlstate", None) or ""
    detail = redact(first_line(exc), dsn)
    if state == "42501":
        return BadInput(
            f"{doing} was refused: {detail}",
            hint="connect as the tables' owner, or a role that may read and write them",
        )
    if state.startswith("42"):
        return BadInput(
            f"{doing} failed: the database does not match devicelab's reference schema: {detail}",
            hint="point --dsn at the app's database, or create a data set in an empty one: "
            "devicelab backend datagen --dsn DSN --messages 100000 --allow-writes",
        )
    if state[:2] in ("08", "57", "53") or isinstance(exc, psycopg.OperationalError):
        return BackendUnavailable(
            f"{doing} stopped: the database went away or gave up: {detail}",
            hint="check that the server runs and has room (connections, memory, disk)",
        )
    return ProbeFailed(
        f"{doing} failed: the database answered with an error: {detail}",
        hint="run it again; if it persists, report it with this line",
    )


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
    """The database libpq connects ``dsn`` to: the DSN's own, else PGDATABASE's (libpq
    reads it where the DSN names none). None when neither names one (libpq then takes the
    user's name: a database we never create or drop) or the DSN does not parse."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        name = conninfo_to_dict(dsn).get("dbname") or os.environ.get("PGDATABASE")
    except psycopg.ProgrammingError:
        return None  # connect() gives the one-line error for a bad DSN
    return str(name) if name else None


#: NAMEDATALEN - 1: the longest identifier PostgreSQL keeps whole.
_MAX_NAME_BYTES = 63


def _created_meanwhile(exc: Exception) -> bool:
    """Whether CREATE DATABASE failed because the database exists: 42P04 once another
    session's creation committed, 23505 on pg_database's name index while it commits."""
    state = getattr(exc, "sqlstate", None)
    if state == "42P04":
        return True
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None) or str(exc)
    return state == "23505" and "pg_database_datname_index" in constraint


def ensure_database(dsn: str) -> str | None:
    """Create the database ``dsn`` names when the server lacks it; return its name when
    created, None when it was there (also when another session created it between our
    look and our CREATE: it is not ours to drop), the DSN names none, or the server does
    not answer (the connection that follows reports that). Raises BadInput when the
    database is missing and we may not create it (SQLSTATE class 42) or its name is longer
    than PostgreSQL keeps, BackendUnavailable when its creation fails otherwise. Whatever
    stops it once CREATE DATABASE is sent (an interrupt included, which it re-raises)
    drops the database again if the server made it and no other session uses it."""
    import psycopg
    from psycopg import sql

    name = _dbname(dsn)
    conn = _maintenance(dsn) if name else None
    if name is None or conn is None:
        return None
    with conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return None
        if len(name.encode()) > _MAX_NAME_BYTES:
            # The server would cut it to 63 bytes, silently: a database of another name.
            raise BadInput(
                f"database name {name[:20]!r}... is {len(name.encode())} bytes: PostgreSQL "
                f"names hold {_MAX_NAME_BYTES} at most",
                hint="name the database in the DSN with 63 bytes or fewer",
            )
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            if _created_meanwhile(exc):
                return None
            if (exc.sqlstate or "").startswith("42"):  # no CREATEDB: the user's to fix
                raise BadInput(
                    f"database {name!r} does not exist and cannot be created: "
                    + redact(str(exc).strip().splitlines()[0], dsn),
                    hint=f"create it (createdb {name}, as a role that may) or name an"
                    " existing database in the DSN",
                ) from None
            if conn.broken:  # lost: perhaps after the server committed the CREATE
                drop_database(dsn)
            raise BackendUnavailable(
                f"database {name!r} does not exist and cannot be created: "
                + redact(str(exc).strip().splitlines()[0], dsn),
                hint=f"create it (createdb {name}) or name an existing database in the DSN",
            ) from None
        except BaseException:
            # A Ctrl-C that lands while the server commits the CREATE leaves the database
            # made though this call never returns its name, so no caller could drop it:
            # dropped here (left, with a warning, when another session already uses it).
            drop_database(dsn)
            raise
    return name


def drop_database(dsn: str) -> bool:
    """Drop the database ``dsn`` names (one :func:`ensure_database` created for a run that
    then failed), unless other sessions use it: then it is another job's database now
    (one that found it there meanwhile), and it is left with a warning naming it; its
    sessions are never ended. Returns False when it is left behind (the server does not
    answer, or refused the drop: a warning names the database), True when it is gone or
    another session has it. Best effort: logs and never raises."""
    import logging

    import psycopg
    from psycopg import sql

    log = logging.getLogger(__name__)
    name = _dbname(dsn)
    if name is None or name in ("postgres", "template1"):
        return True
    conn = _maintenance(dsn)
    if conn is None:
        log.warning("could not drop database %s: the server does not answer", name)
        return False
    try:
        with conn:
            # No FORCE: the server waits up to 5 s for sessions that are closing (ours).
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    except psycopg.errors.ObjectInUse:
        log.warning("left database %s: another session uses it (another job started on it)", name)
        return True  # another job's now: not left behind by us
    except (BackendUnavailable, psycopg.Error) as exc:
        log.warning("could not drop database %s: %s", name, redact(str(exc), dsn))
        return False
    return True
