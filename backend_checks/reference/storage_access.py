"""Storage's access rules, and the bucket and object rows they are checked on.

``authenticated`` and ``service_role`` callers may write (``require_writer``) and read
private buckets such as ``media``; anyone may read a public bucket (``may_read``);
overwriting, moving or deleting an object needs its owner or the service role
(``may_change``; objects the service role stored have no owner: only it may change them).
A writer takes the object's key (``lock_object``) and its row (``object_for_update``)
before it changes either. The handlers (``storage``, ``storage_transfer``,
``storage_buckets``) check these before any file or row is touched.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from aiohttp import web

from backend_checks.reference.context import AuthRejected
from backend_checks.reference.db import privileged
from backend_checks.reference.errors import storage_error
from backend_checks.reference.identity import context_of, resolve_claims
from backend_checks.reference.storage_files import check_bucket_id

__all__ = [
    "OBJECT_COLUMNS",
    "bucket_row",
    "caller",
    "lock_object",
    "may_change",
    "may_read",
    "object_dict",
    "object_for_update",
    "object_row",
    "owner_of",
    "require_writer",
]

_WRITERS = frozenset({"authenticated", "service_role"})
#: The columns of ``storage.objects`` that ``object_dict`` reads, in its order.
OBJECT_COLUMNS = (
    "id::text, name, owner::text, size, mimetype, cache_control, etag, user_metadata,"
    " to_json(created_at)#>>'{}', to_json(updated_at)#>>'{}', to_json(last_accessed_at)#>>'{}'"
)


def caller(request: web.Request) -> dict[str, Any]:
    """The caller's claims; raises ApiError 400 (Storage's answer) for a bad token."""
    try:
        return resolve_claims(request)
    except AuthRejected as exc:
        raise storage_error(400, "InvalidJWT", exc.message) from exc


async def bucket_row(request: web.Request, bucket_id: str) -> dict[str, Any]:
    """The bucket as storage-js's ``Bucket``; raises ApiError 400 (bad id) or 404."""
    check_bucket_id(bucket_id)
    async with privileged(context_of(request)) as conn:
        row = await (
            await conn.execute(
                "SELECT id, name, owner::text, public, file_size_limit, allowed_mime_types,"
                " to_json(created_at)#>>'{}', to_json(updated_at)#>>'{}'"
                " FROM storage.buckets WHERE id = %s",
                (bucket_id,),
            )
        ).fetchone()
    if row is None:
        raise storage_error(404, "Bucket not found", "Bucket not found")
    keys = ("id", "name", "owner", "public", "file_size_limit", "allowed_mime_types",
            "created_at", "updated_at")  # fmt: skip
    bucket = dict(zip(keys, row, strict=True))
    bucket["owner"] = bucket["owner"] or ""
    return bucket


def object_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A ``storage.objects`` row (selected as ``OBJECT_COLUMNS``) as a dict."""
    keys = ("id", "name", "owner", "size", "mimetype", "cache_control", "etag",
            "user_metadata", "created_at", "updated_at", "last_accessed_at")  # fmt: skip
    return dict(zip(keys, row, strict=True))


async def object_row(request: web.Request, bucket: str, name: str) -> dict[str, Any] | None:
    """The object ``bucket/name`` as a dict, or None when there is none."""
    async with privileged(context_of(request)) as conn:
        row = await (
            await conn.execute(
                f"SELECT {OBJECT_COLUMNS} FROM storage.objects WHERE bucket_id = %s AND name = %s",
                (bucket, name),
            )
        ).fetchone()
    return object_dict(row) if row else None


def may_read(claims: dict[str, Any] | None, bucket: dict[str, Any]) -> bool:
    """True when ``claims`` may read objects of ``bucket`` (public, or a writer role)."""
    return bool(bucket["public"]) or (claims is not None and claims.get("role") in _WRITERS)


def require_writer(claims: dict[str, Any]) -> None:
    """Raise ApiError 403 unless ``claims`` are the service role, or authenticated as a
    user (a ``sub`` that is a uuid: without one, a token would own nothing and be taken
    for the service role, which may change every object)."""
    role = claims.get("role")
    if role not in _WRITERS or (role == "authenticated" and not _is_uuid(claims.get("sub"))):
        raise storage_error(403, "Unauthorized", "new row violates row-level security policy")


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return value is not None


async def lock_object(conn: psycopg.AsyncConnection[Any], bucket_id: str, name: str) -> None:
    """Hold ``bucket_id/name`` for the rest of ``conn``'s transaction.

    Uploads, moves and copies that write one key take turns: a row lock cannot do it
    while the row does not exist yet (two uploads of one new key both saw none).
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('devicelab.reference.object'), hashtext(%s))",
        (f"{bucket_id}/{name}",),
    )


async def object_for_update(
    conn: psycopg.AsyncConnection[Any], bucket_id: str, name: str
) -> tuple[str, str | None] | None:
    """``(id, owner)`` of the object ``bucket_id/name``, its row locked for the rest of
    ``conn``'s transaction; None when there is none."""
    row = await (
        await conn.execute(
            "SELECT id::text, owner::text FROM storage.objects"
            " WHERE bucket_id = %s AND name = %s FOR UPDATE",
            (bucket_id, name),
        )
    ).fetchone()
    return (str(row[0]), row[1]) if row else None


def may_change(owner: str | None, existing_owner: str | None) -> bool:
    """Whether a writer recorded as ``owner`` (None: the service role) may overwrite, move
    or delete an object owned by ``existing_owner`` (None: the service role's)."""
    return owner is None or existing_owner == owner


def owner_of(claims: dict[str, Any]) -> str | None:
    """The owner recorded for objects written by ``claims`` (None for the service role)."""
    return (
        str(claims["sub"]) if claims.get("role") == "authenticated" and claims.get("sub") else None
    )
