"""``/storage/v1/bucket``: list, get, create, update, empty and delete buckets.

Anyone with a key may look at buckets; creating, changing, emptying and deleting them
needs the service role (Supabase's default policies).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from backend_checks.reference.db import privileged
from backend_checks.reference.errors import storage_error
from backend_checks.reference.identity import context_of
from backend_checks.reference.storage import json_body
from backend_checks.reference.storage_access import bucket_row, caller
from backend_checks.reference.storage_files import check_bucket_id, object_file

__all__ = ["add_routes"]


def _require_service(claims: dict[str, Any]) -> None:
    if claims.get("role") != "service_role":
        raise storage_error(403, "Unauthorized", "new row violates row-level security policy")


async def _list_buckets(request: web.Request) -> web.Response:
    """GET ``/bucket``: every bucket."""
    caller(request)
    async with privileged(context_of(request)) as conn:
        ids = [
            r[0]
            for r in await (
                await conn.execute("SELECT id FROM storage.buckets ORDER BY id")
            ).fetchall()
        ]
    return web.json_response([await bucket_row(request, i) for i in ids])


async def _get_bucket(request: web.Request) -> web.Response:
    """GET ``/bucket/<id>``."""
    caller(request)
    return web.json_response(await bucket_row(request, request.match_info["bucket"]))


async def _create_bucket(request: web.Request) -> web.Response:
    """POST ``/bucket`` {id|name, public, file_size_limit, allowed_mime_types} (service role)."""
    _require_service(caller(request))
    body = await json_body(request)
    bucket_id = check_bucket_id(str(body.get("id") or body.get("name") or ""))
    limit = body.get("file_size_limit")
    mimes = body.get("allowed_mime_types")
    async with privileged(context_of(request)) as conn:
        row = await (
            await conn.execute(
                "INSERT INTO storage.buckets"
                " (id, name, public, file_size_limit, allowed_mime_types)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
                (bucket_id, bucket_id, bool(body.get("public")),
                 int(limit) if isinstance(limit, int) else None,
                 mimes if isinstance(mimes, list) else None),
            )
        ).fetchone()  # fmt: skip
    if row is None:
        raise storage_error(409, "Duplicate", "The resource already exists")
    return web.json_response({"name": bucket_id})


async def _delete_bucket(request: web.Request) -> web.Response:
    """DELETE ``/bucket/<id>`` (service role; the bucket must be empty)."""
    _require_service(caller(request))
    bucket_id = check_bucket_id(request.match_info["bucket"])
    async with privileged(context_of(request)) as conn:
        used = await (
            await conn.execute("SELECT 1 FROM storage.objects WHERE bucket_id = %s LIMIT 1",
                               (bucket_id,))
        ).fetchone()  # fmt: skip
        if used:
            raise storage_error(
                409, "InvalidRequest", "The bucket you tried to delete is not empty"
            )
        await conn.execute("DELETE FROM storage.buckets WHERE id = %s", (bucket_id,))
    return web.json_response({"message": "Successfully deleted"})


async def _update_bucket(request: web.Request) -> web.Response:
    """PUT ``/bucket/<id>`` {public, file_size_limit, allowed_mime_types} (service role)."""
    _require_service(caller(request))
    bucket_id = check_bucket_id(request.match_info["bucket"])
    await bucket_row(request, bucket_id)
    body = await json_body(request)
    limit = body.get("file_size_limit")
    mimes = body.get("allowed_mime_types")
    async with privileged(context_of(request)) as conn:
        await conn.execute(
            "UPDATE storage.buckets SET public = %s, file_size_limit = %s,"
            " allowed_mime_types = %s, updated_at = now() WHERE id = %s",
            (bool(body.get("public")), int(limit) if isinstance(limit, int) else None,
             mimes if isinstance(mimes, list) else None, bucket_id),
        )  # fmt: skip
    return web.json_response({"message": "Successfully updated"})


async def _empty_bucket(request: web.Request) -> web.Response:
    """POST ``/bucket/<id>/empty``: delete every object of the bucket (service role)."""
    _require_service(caller(request))
    bucket_id = check_bucket_id(request.match_info["bucket"])
    await bucket_row(request, bucket_id)
    ctx = context_of(request)
    async with privileged(ctx) as conn:
        rows = await (
            await conn.execute(
                "DELETE FROM storage.objects WHERE bucket_id = %s RETURNING id::text", (bucket_id,)
            )
        ).fetchall()
    for (object_id,) in rows:
        await asyncio.to_thread(
            object_file(ctx.storage_root, bucket_id, object_id).unlink, missing_ok=True
        )
    return web.json_response({"message": "Successfully emptied"})


def add_routes(app: web.Application) -> None:
    """Register the ``/storage/v1/bucket`` routes."""
    base = "/storage/v1/bucket"
    app.router.add_get(base, _list_buckets)
    app.router.add_post(base, _create_bucket)
    app.router.add_get(f"{base}/{{bucket}}", _get_bucket)
    app.router.add_put(f"{base}/{{bucket}}", _update_bucket)
    app.router.add_delete(f"{base}/{{bucket}}", _delete_bucket)
    app.router.add_post(f"{base}/{{bucket}}/empty", _empty_bucket)
