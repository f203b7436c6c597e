"""Storing an uploaded object: its bytes read from the request, then its file and row
written together.

Uploads accept a multipart form (supabase-js, supabase-py) or a raw body, with the
object's mimetype, cache control and user metadata. Writers of one key take turns
(``storage_access.lock_object``); the file takes its place as the last step before the
row's commit, so an upload that fails leaves the stored object as it was.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from backend_checks.reference.db import privileged
from backend_checks.reference.errors import storage_error
from backend_checks.reference.identity import context_of
from backend_checks.reference.storage_access import (
    bucket_row,
    lock_object,
    may_change,
    object_for_update,
)
from backend_checks.reference.storage_files import DEFAULT_FILE_SIZE_LIMIT, object_file, stage_file

__all__ = ["store"]


async def _read_upload(
    request: web.Request, limit: int
) -> tuple[list[bytes], str, str | None, dict[str, Any] | None]:
    """The uploaded bytes (in chunks), their mimetype, cache control and user metadata.

    Raises ApiError 413 when larger than ``limit`` and 400 when the form has no file.
    """
    chunks: list[bytes] = []
    size = 0
    mimetype = "application/octet-stream"
    cache_control: str | None = None
    metadata: dict[str, Any] | None = None

    async def take(read: Any) -> None:
        nonlocal size
        while True:
            chunk = await read()
            if not chunk:
                return
            size += len(chunk)
            if size > limit:
                raise storage_error(413, "Payload too large",
                                    "The object exceeded the maximum allowed size")  # fmt: skip
            chunks.append(bytes(chunk))

    if request.content_type.startswith("multipart/"):
        found = False
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.filename is not None or part.name in ("", "file", None):
                found = True
                mimetype = part.headers.get("Content-Type", mimetype)
                await take(lambda p=part: p.read_chunk(256 * 1024))
            elif part.name == "cacheControl":
                cache_control = (await part.text())[:200]
            elif part.name == "metadata":
                metadata = _metadata((await part.text())[:10000])
        if not found:
            raise storage_error(400, "InvalidRequest", "No file found in the multipart form")
    else:
        mimetype = request.headers.get("Content-Type") or mimetype
        cache_control = request.headers.get("Cache-Control")
        encoded = request.headers.get("x-metadata")
        if encoded:
            try:
                metadata = _metadata(base64.b64decode(encoded).decode())
            except ValueError as exc:
                raise storage_error(400, "InvalidRequest", "x-metadata is not base64") from exc
        await take(lambda: request.content.read(256 * 1024))
    if cache_control and cache_control.isdigit():
        cache_control = f"max-age={cache_control}"
    return chunks, mimetype[:200], cache_control, metadata


def _metadata(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise storage_error(400, "InvalidRequest", "metadata is not JSON") from exc
    return value if isinstance(value, dict) else None


async def store(
    request: web.Request, bucket_id: str, name: str, *, owner: str | None, upsert: bool
) -> web.Response:
    """Read the upload of ``request`` and store it as ``bucket_id/name``: ``{Id, Key}``.

    Raises ApiError 404 (bucket), 409 (exists, no upsert), 403 (an object of another
    owner, or of the service role for a user), 413 (too large), 415 (mimetype not allowed).
    """
    bucket = await bucket_row(request, bucket_id)
    limit = int(bucket["file_size_limit"] or DEFAULT_FILE_SIZE_LIMIT)
    chunks, mimetype, cache_control, metadata = await _read_upload(request, limit)
    allowed = bucket["allowed_mime_types"]
    if allowed and mimetype.split(";")[0] not in allowed:
        raise storage_error(415, "invalid_mime_type", f"mime type {mimetype} is not supported")
    ctx = context_of(request)
    size = sum(len(c) for c in chunks)
    etag = f'"{hashlib.md5(b"".join(chunks), usedforsecurity=False).hexdigest()}"'
    values = (size, mimetype, cache_control, etag,
              json.dumps(metadata) if metadata is not None else None)  # fmt: skip
    staged: Path | None = None
    placed: Path | None = None  # a new object's file, removed if its row is not committed
    try:
        async with privileged(ctx) as conn:
            await lock_object(conn, bucket_id, name)
            existing = await object_for_update(conn, bucket_id, name)
            if existing and not upsert:
                raise storage_error(409, "Duplicate", "The resource already exists")
            if existing and not may_change(owner, existing[1]):
                raise storage_error(
                    403, "Unauthorized", "new row violates row-level security policy"
                )
            object_id = existing[0] if existing else str(uuid.uuid4())
            path = object_file(ctx.storage_root, bucket_id, object_id)
            staged = await asyncio.to_thread(stage_file, path, chunks)
            if existing:
                await conn.execute(
                    "UPDATE storage.objects SET size = %s, mimetype = %s, cache_control = %s,"
                    " etag = %s, user_metadata = %s, updated_at = now() WHERE id = %s",
                    (*values, object_id),
                )
            else:
                made = await (
                    await conn.execute(
                        "INSERT INTO storage.objects (id, bucket_id, name, owner, size,"
                        " mimetype, cache_control, etag, user_metadata)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (bucket_id, name) DO NOTHING RETURNING id",
                        (object_id, bucket_id, name, owner, *values),
                    )
                ).fetchone()
                if made is None:  # a writer that did not take the lock got there first
                    raise storage_error(409, "Duplicate", "The resource already exists")
                placed = path
            # The file takes its place once its row is written, as the last step before the
            # commit: an upsert that fails leaves the stored object (file and row) as it was.
            await asyncio.to_thread(staged.replace, path)
            staged = None
    except BaseException:
        for leftover in (staged, placed):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise
    return web.json_response({"Id": object_id, "Key": f"{bucket_id}/{name}"})
