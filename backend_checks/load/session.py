"""What a simulated user talks through: a session with the server, SQL or HTTP.

Both kinds (``sql_session.SqlSession``, ``rest_session.RestSession``) have the same small
contract, so the pacing in the locustfile does not care which one it drives::

    connect()    open the connection (SQL) or sign in (HTTP); raises SessionError
    connected    False until connect() succeeded, and again after a lost connection
    run(op, p)   one operation with its parameters, the whole answer read; raises SessionError
    warm(reqs)   before the window: run each operation once and leave nothing behind
    close()      end the session (the server flushes its table statistics)

Errors are classified once, here and in the two sessions, into the kinds the verdict
counts: "exhaustion" (no connection slot or pool connection left), "timeout",
"connection" (lost or refused), "rate_limited" (HTTP 429), "auth", "http:<status>",
"sql:<sqlstate>". Nothing here imports gevent, Locust or a driver.
"""

from __future__ import annotations

from typing import Protocol

from backend_checks.load.mix import Operation

__all__ = ["EXHAUSTION_TEXT", "Session", "SessionError", "is_exhaustion"]

#: Text of the errors that mean no connection was left: PostgreSQL's own (53300, a
#: role's limit, reserved slots), poolers' (PgBouncer, Supavisor), PostgREST's pool
#: acquisition timeout (PGRST003, 504) and our reference server's pool timeout (503).
EXHAUSTION_TEXT = (
    "too many clients",
    "too many connections",
    "remaining connection slots",
    "connection pool",
    "pool timeout",
    "no more connections allowed",
    "max client connections",
    "maxclientsinsessionmode",
    "pgrst003",
    "acquiring connection",
    "no database connection available",
)


def is_exhaustion(text: str) -> bool:
    """True when an error text says the server had no connection left for the request."""
    lowered = text.lower()
    return any(marker in lowered for marker in EXHAUSTION_TEXT)


class SessionError(Exception):
    """A connection attempt or a request failed.

    ``kind`` is the classified error kind (see the module docstring); ``lost`` says the
    session must connect again before its next request.
    """

    def __init__(self, kind: str, message: str, *, lost: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.lost = lost


class Session(Protocol):
    """One simulated user's session with the server (see the module docstring)."""

    conversations: list[str]

    @property
    def connected(self) -> bool:
        """True while the session can send requests."""
        ...

    def connect(self) -> None:
        """Connect or sign in. Raises SessionError."""
        ...

    def run(self, op: Operation, params: dict[str, str]) -> None:
        """Run ``op`` and read its whole answer. Raises SessionError."""
        ...

    def warm(self, requests: list[tuple[Operation, dict[str, str]]]) -> None:
        """Run each of ``requests`` once before the window opens, so that the window
        meets a warm session, as an API's long-lived pool connections are; writes leave
        nothing behind. Never raises (a lost session reconnects in the window)."""
        ...

    def close(self) -> None:
        """End the session (never raises)."""
        ...
