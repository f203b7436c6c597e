"""The load steps of ``backend check --load``: load_100 and load_1000, as SQL on the DSN.

``backend check`` loads the database it checks: each simulated user is one SQL session
on the DSN, as PostgREST's pool would hold them (``backend load --url`` loads through the
API instead). On a hosted project that is a thousand direct connections to its database,
so each check names the database it loaded (``user@host:port/db``, no password) and how,
and the connections the server has free for this role are read first: a step that will
exceed them says so up front in its reason and evidence (the exhaustion itself is still
measured and judged).

A load that cannot run (a refusal, the server gone) makes the load checks errors with the
reason: the SQL checks measured before are kept, and results.json is written.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from devicelab.errors import DeviceLabError
from devicelab.models import Check, ConnectionRoom

if TYPE_CHECKING:
    from backend_checks.check import CheckOptions

__all__ = ["connection_room", "load_checks"]

_log = logging.getLogger(__name__)

#: What the reason says of the transport, and how to load through the API instead.
VIA_SQL = (
    "ran as SQL sessions directly on the DSN (one a user); to load through the API as the"
    " app does: devicelab backend load --url URL --anon-key KEY"
)

_ROOM_SQL = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true)::int, 0),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       r.rolsuper,
       -- PostgreSQL 16's reserved_connections, for members of this role (none before).
       coalesce(pg_has_role(current_user, to_regrole('pg_use_reserved_connections'),
                            'MEMBER'), false),
       r.rolconnlimit,
       (SELECT count(*) FROM pg_stat_activity
        WHERE usename = current_user AND backend_type = 'client backend'),
       d.datconnlimit,
       (SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND backend_type = 'client backend')
FROM pg_roles r, pg_database d
WHERE r.rolname = current_user AND d.datname = current_database()
"""


def connection_room(dsn: str) -> ConnectionRoom | None:
    """The connections the server of ``dsn`` has free for its role: ``free`` (the least
    of the server's, the role's and the database's room) and the numbers it comes from.
    None when they cannot be read (the evidence then says nothing). Raises nothing."""
    import psycopg

    from backend_checks.db import connect

    try:
        with connect(dsn, autocommit=True) as conn:
            row = conn.execute(_ROOM_SQL).fetchone()
    except (psycopg.Error, DeviceLabError):
        return None
    if row is None:
        return None
    maximum, su_reserved, reserved, in_use, superuser, may_reserved = row[:6]
    role_limit, role_in_use, db_limit, db_in_use = row[6:]
    # Our own connection is counted in use, and closes before the load starts.
    server = maximum - in_use + 1 - (0 if superuser else su_reserved)
    if not (superuser or may_reserved):
        server -= reserved
    role_binds = not superuser and role_limit >= 0
    db_binds = not superuser and db_limit >= 0
    free = [server]
    if role_binds:
        free.append(role_limit - role_in_use + 1)
    if db_binds:
        free.append(db_limit - db_in_use + 1)
    return ConnectionRoom(
        max_connections=maximum,
        superuser_reserved_connections=su_reserved,
        reserved_connections=reserved,
        in_use=in_use - 1,
        role_limit=role_limit if role_binds else None,
        database_limit=db_limit if db_binds else None,
        free=max(0, min(free)),
    )


def load_checks(dsn: str, options: CheckOptions, *, managed: bool) -> list[Check]:
    """load_100 and load_1000: run when ``options.load_s`` is set, else skipped with a
    reason. On a given DSN without allow_writes only the read mix runs (the full mix
    writes), unless the database holds only a data set of ``backend datagen``.

    Returns the checks; a load that cannot run gives them status error with its reason.
    Raises nothing of devicelab's own (KeyboardInterrupt passes).
    """
    from backend_checks.backend_info import database_url
    from backend_checks.load.verdict import LOAD_CHECKS

    if options.only is not None and not any(cid in options.only for cid, _ in LOAD_CHECKS):
        return []
    if options.load_s is None:
        reason = "load runs on request: `devicelab backend load`, or `backend check --load 30s`"
        return [
            Check(id=cid, title=title, category="load", status="skip", reason=reason)
            for cid, title in LOAD_CHECKS
        ]
    target = {"database": database_url(dsn), "transport": "sql", "how": VIA_SQL}
    try:
        found, room, notes = _run(dsn, options, managed=managed)
    except DeviceLabError as exc:
        reason = f"cannot measure: {exc.one_line()}"
        return [
            Check(id=cid, title=title, category="load", status="error", reason=reason,
                  evidence={"target": target})
            for cid, title in LOAD_CHECKS
        ]  # fmt: skip
    for check in found:
        check.evidence["target"] = target
        check.reason += (
            f"; ran as SQL sessions on {target['database']} (through the API instead:"
            " devicelab backend load --url)"
        )
        if room is not None:
            check.evidence["connections"] = room.model_dump(mode="json")
            need = _users_of(check)
            if need is not None and need > room.free:
                check.reason += (
                    f"; {need} sessions exceed the {room.free} connections the server had"
                    " free for this role before the step"
                )
        if notes:
            check.evidence["notes"] = [*check.evidence.get("notes", []), *notes]
    return found


def _users_of(check: Check) -> int | None:
    """The users of the step a load check judged (load_<n>: n when it judged none)."""
    users = check.evidence.get("users")
    if isinstance(users, int):
        return users
    tail = check.id.removeprefix("load_")
    return int(tail) if tail.isdigit() else None


def _run(
    dsn: str, options: CheckOptions, *, managed: bool
) -> tuple[list[Check], ConnectionRoom | None, list[str]]:
    """The load's checks, the connection room read before it, and notes for the evidence.
    Raises DeviceLabError (the load could not run)."""
    from backend_checks.datagen import scratch_state
    from backend_checks.load import LoadOptions, run_load
    from backend_checks.load.verdict import load_checks as judged
    from devicelab.config import load_targets

    notes: list[str] = []
    writes = managed or options.allow_writes
    if not writes:
        state = scratch_state(dsn)
        writes = state.ours
        if state.unknown:
            notes.append(
                f"the read mix ran: this role cannot tell whether the data is a `backend"
                f" datagen` data set ({state.unknown}); {state.grant} lets the full mix run"
            )
    load = LoadOptions(duration_s=options.load_s, mix="full" if writes else "read",
                       allow_writes=writes)  # fmt: skip
    room = connection_room(dsn)
    if room is not None:
        for users in load.users:
            if users > room.free:
                # Said before the sessions open: the step will meet the server's limit.
                _log.warning(
                    "load: %d SQL sessions exceed the %d connections the server has free"
                    " for this role",
                    users,
                    room.free,
                )
    found, _ = judged(run_load(dsn, load), load_targets())
    return found, room, notes
