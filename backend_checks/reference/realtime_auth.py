"""Realtime Authorization of the reference server: who may join, send to and track in a
private channel (``config.private``), decided by the database's row-level security
policies on ``realtime.messages``, as Supabase Realtime decides it.

Read rights (asked at the join, and again when the channel gets a new token): in a
transaction that is rolled back, the server inserts one probe row of the topic per
extension (``broadcast``, ``presence``), takes the user's role, claims and topic (``role``,
``request.jwt.claims``, ``realtime.topic``) and selects the rows back; each row the
policies let the user see is that extension's read right. Write rights (asked at the
channel's first broadcast or presence track): as the user, one probe row per extension
is inserted, each in a savepoint; an insert the policies let through is the write right.
Nothing is ever committed. A policy that fails to run raises :class:`PolicyError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["PolicyError", "Rights", "read_rights", "write_rights"]

_EXTENSIONS = ("broadcast", "presence")


class PolicyError(Exception):
    """A policy on realtime.messages (or the table itself) failed: the check could not
    run, which Supabase reports instead of a verdict."""


@dataclass(slots=True)
class Rights:
    """What one private channel join may do. Writes are None until first asked."""

    broadcast_read: bool = False
    presence_read: bool = False
    broadcast_write: bool | None = None
    presence_write: bool | None = None


async def _as_user(
    conn: psycopg.AsyncConnection[Any], topic: str, role: str, claims_json: str
) -> None:
    """Take the user's role and claims and the channel's topic, for this transaction."""
    await conn.execute(
        "select set_config('role', %s, true), set_config('realtime.topic', %s, true),"
        " set_config('request.jwt.claims', %s, true)",
        (role, topic, claims_json),
    )


async def read_rights(
    conn: psycopg.AsyncConnection[Any], topic: str, role: str, claims_json: str
) -> tuple[bool, bool]:
    """(broadcast, presence): may this user receive on private channel ``topic``?

    Raises PolicyError.
    """
    try:
        async with conn.transaction(force_rollback=True):
            cur = await conn.execute(
                "insert into realtime.messages (topic, extension)"
                " select %s, e from unnest(%s::text[]) e returning id",
                (topic, list(_EXTENSIONS)),
            )
            probes = [row[0] for row in await cur.fetchall()]
            await _as_user(conn, topic, role, claims_json)
            cur = await conn.execute(
                "select extension from realtime.messages where topic = %s and id = any(%s)",
                (topic, probes),
            )
            seen = {str(row[0]) for row in await cur.fetchall()}
    except psycopg.Error as exc:
        raise PolicyError(_first_line(exc)) from exc
    return "broadcast" in seen, "presence" in seen


async def write_rights(
    conn: psycopg.AsyncConnection[Any], topic: str, role: str, claims_json: str
) -> tuple[bool, bool]:
    """(broadcast, presence): may this user send (track) on private channel ``topic``?

    Raises PolicyError.
    """
    allowed: list[bool] = []
    try:
        async with conn.transaction(force_rollback=True):
            await _as_user(conn, topic, role, claims_json)
            for extension in _EXTENSIONS:
                try:
                    async with conn.transaction():  # a savepoint per probe
                        await conn.execute(
                            "insert into realtime.messages (topic, extension) values (%s, %s)",
                            (topic, extension),
                        )
                    allowed.append(True)
                except psycopg.errors.InsufficientPrivilege:  # the policies said no
                    allowed.append(False)
    except psycopg.Error as exc:
        raise PolicyError(_first_line(exc)) from exc
    return allowed[0], allowed[1]


def _first_line(exc: psycopg.Error) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
