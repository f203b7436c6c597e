"""``/storage/v1`` transfers: signed upload URLs, move and copy.

A signed upload URL (``POST /object/upload/sign/<bucket>/<name>``) lets whoever holds it
upload that one object for two hours, as the user who asked for it; its token is marked
``kind: upload`` so it can never serve as a download token, nor the reverse.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from typing import Any

from aiohttp import web

from backend_checks.reference.db import privileged
from backend_checks.reference.errors import storage_error
from backend_checks.reference.identity import context_of
from backend_checks.reference.storage import json_body
from backend_checks.reference.storage_access import (
    bucket_row,
    caller,
    lock_object,
    may_change,
    object_for_update,
    owner_of,
    require_writer,
)
from backend_checks.reference.storage_files import (
    check_bucket_id,
    check_object_name,
    object_file,
    sign_token,
    verify_token,
)
from backend_checks.reference.storage_upload import store

__all__ = ["add_routes"]

#: Supabase's signed upload URLs last two hours.
UPLOAD_URL_LIFETIME_S = 2 * 3600


async def _create_upload_url(request: web.Request) -> web.Response:
    """POST ``/object/upload/sign/<bucket>/<name>``: ``{url, token}`` for one upload."""
    claims = caller(request)
    require_writer(claims)
    bucket_id = check_bucket_id(request.match_info["bucket"])
    name = check_object_name(request.match_info["name"])
    await bucket_row(request, bucket_id)
    upsert = request.headers.get("x-upsert", "").lower() == "true"
    extra = {"kind": "upload", "owner": owner_of(claims), "upsert": upsert}
    token = sign_token(
        context_of(request).jwt_secret, bucket_id, name, UPLOAD_URL_LIFETIME_S, extra=extra
    )
    url = f"/object/upload/sign/{bucket_id}/{name}?token={token}"
    return web.json_response({"url": url, "token": token})


async def _upload_to_url(request: web.Request) -> web.Response:
    """PUT ``/object/upload/sign/<bucket>/<name>?token=``: the upload the token allows."""
    bucket_id = check_bucket_id(request.match_info["bucket"])
    name = check_object_name(request.match_info["name"])
    token = request.query.get("token")
    if not token:
        raise storage_error(400, "InvalidJWT", "a token query parameter is required")
    claims = verify_token(context_of(request).jwt_secret, token, bucket_id, name, kind="upload")
    owner = claims.get("owner")
    return await store(
        request,
        bucket_id,
        name,
        owner=str(owner) if owner else None,
        upsert=bool(claims.get("upsert")),
    )


def _keys(body: dict[str, Any]) -> tuple[str, str, str, str]:
    source = body.get("bucketId")
    target = body.get("destinationBucket") or source
    src, dst = body.get("sourceKey"), body.get("destinationKey")
    if not all(isinstance(v, str) for v in (source, target, src, dst)):
        raise storage_error(400, "InvalidRequest", "bucketId, sourceKey and destinationKey needed")
    return (
        check_bucket_id(str(source)),
        check_object_name(str(src)),
        check_bucket_id(str(target)),
        check_object_name(str(dst)),
    )


async def _transfer(request: web.Request, *, keep_source: bool) -> tuple[str, str, str]:
    """Copy or move one object; returns (new id, target bucket, target name)."""
    claims = caller(request)
    require_writer(claims)
    src_bucket, src, dst_bucket, dst = _keys(await json_body(request))
    await bucket_row(request, src_bucket)
    await bucket_row(request, dst_bucket)
    owner = owner_of(claims)
    ctx = context_of(request)
    async with privileged(ctx) as conn:
        # Both keys, in one order (two transfers the other way round must not deadlock).
        for bucket_id, name in sorted({(src_bucket, src), (dst_bucket, dst)}):
            await lock_object(conn, bucket_id, name)
        row = await object_for_update(conn, src_bucket, src)
        if row is None:
            raise storage_error(404, "not_found", "Object not found")
        if not keep_source and not may_change(owner, row[1]):
            raise storage_error(403, "Unauthorized", "new row violates row-level security policy")
        taken = await (
            await conn.execute(
                "SELECT 1 FROM storage.objects WHERE bucket_id = %s AND name = %s",
                (dst_bucket, dst),
            )
        ).fetchone()
        if taken:
            raise storage_error(409, "Duplicate", "The resource already exists")
        old_file = object_file(ctx.storage_root, src_bucket, row[0])
        new_id = str(uuid.uuid4()) if keep_source else row[0]
        new_file = object_file(ctx.storage_root, dst_bucket, new_id)
        new_file.parent.mkdir(parents=True, exist_ok=True)
        if keep_source:
            await asyncio.to_thread(shutil.copyfile, old_file, new_file)
            await conn.execute(
                "INSERT INTO storage.objects (id, bucket_id, name, owner, size, mimetype,"
                " cache_control, etag, user_metadata) SELECT %s, %s, %s, coalesce(%s::uuid,"
                " owner), size, mimetype, cache_control, etag, user_metadata"
                " FROM storage.objects WHERE id = %s",
                (new_id, dst_bucket, dst, owner, row[0]),
            )
        else:
            await conn.execute(
                "UPDATE storage.objects SET bucket_id = %s, name = %s, updated_at = now()"
                " WHERE id = %s",
                (dst_bucket, dst, row[0]),
            )
            if new_file != old_file:
                await asyncio.to_thread(old_file.replace, new_file)
    return new_id, dst_bucket, dst


async def _move(request: web.Request) -> web.Response:
    """POST ``/object/move`` {bucketId, sourceKey, destinationKey, destinationBucket?}."""
    await _transfer(request, keep_source=False)
    return web.json_response({"message": "Successfully moved"})


async def _copy(request: web.Request) -> web.Response:
    """POST ``/object/copy`` {bucketId, sourceKey, destinationKey, destinationBucket?}."""
    new_id, bucket_id, name = await _transfer(request, keep_source=True)
    return web.json_response({"Id": new_id, "Key": f"{bucket_id}/{name}"})


def add_routes(app: web.Application) -> None:
    """Register the transfer routes (before the generic ``/object/<bucket>/...`` ones)."""
    base = "/storage/v1/object"
    app.router.add_post(f"{base}/upload/sign/{{bucket}}/{{name:.+}}", _create_upload_url)
    app.router.add_put(f"{base}/upload/sign/{{bucket}}/{{name:.+}}", _upload_to_url)
    app.router.add_post(f"{base}/move", _move)
    app.router.add_post(f"{base}/copy", _copy)
