"""``/storage/v1``: Supabase Storage's object and bucket API over local files.

Access rules (checked here, before any file or row is touched): ``authenticated`` and
``service_role`` callers may read and write private buckets such as ``media``; anyone may
read a public bucket; overwriting, moving or deleting an object needs its owner or the
service role (objects the service role stored have no owner: only it may change them);
creating and deleting buckets needs the service role. Signed URLs are fetched with
their token only. Uploads accept a multipart form (supabase-js, supabase-py) or a raw body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
from aiohttp import BodyPartReader, web

from backend_checks.reference.context import AuthRejected
from backend_checks.reference.db import privileged
from backend_checks.reference.errors import read_json_object, storage_error
from backend_checks.reference.identity import context_of, resolve_claims
from backend_checks.reference.storage_files import (
    DEFAULT_FILE_SIZE_LIMIT,
    ObjectFileResponse,
    check_bucket_id,
    check_object_name,
    object_file,
    sign_token,
    stage_file,
    verify_token,
)

__all__ = [
    "add_routes",
    "bucket_row",
    "caller",
    "file_object",
    "json_body",
    "lock_object",
    "may_change",
    "may_read",
    "object_dict",
    "object_for_update",
    "object_row",
    "owner_of",
    "require_writer",
    "store",
]

_WRITERS = frozenset({"authenticated", "service_role"})
_OBJECT_COLUMNS = (
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
    """A ``storage.objects`` row (selected as ``_OBJECT_COLUMNS``) as a dict."""
    keys = ("id", "name", "owner", "size", "mimetype", "cache_control", "etag",
            "user_metadata", "created_at", "updated_at", "last_accessed_at")  # fmt: skip
    return dict(zip(keys, row, strict=True))


async def object_row(request: web.Request, bucket: str, name: str) -> dict[str, Any] | None:
    """The object ``bucket/name`` as a dict, or None when there is none."""
    async with privileged(context_of(request)) as conn:
        row = await (
            await conn.execute(
                f"SELECT {_OBJECT_COLUMNS} FROM storage.objects WHERE bucket_id = %s AND name = %s",
                (bucket, name),
            )
        ).fetchone()
    return object_dict(row) if row else None


def file_object(obj: dict[str, Any]) -> dict[str, Any]:
    """A storage-js FileObject (list and remove answers)."""
    return {
        "name": obj["name"],
        "id": obj["id"],
        "updated_at": obj["updated_at"],
        "created_at": obj["created_at"],
        "last_accessed_at": obj["last_accessed_at"],
        "metadata": {
            "eTag": obj["etag"],
            "size": obj["size"],
            "mimetype": obj["mimetype"],
            "cacheControl": obj["cache_control"],
            "lastModified": obj["updated_at"],
            "contentLength": obj["size"],
            "httpStatusCode": 200,
        },
    }


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


def owner_of(claims: dict[str, Any]) -> str | None:
    """The owner recorded for objects written by ``claims`` (None for the service role)."""
    return (
        str(claims["sub"]) if claims.get("role") == "authenticated" and claims.get("sub") else None
    )


async def _upload(request: web.Request) -> web.Response:
    """POST (or PUT, which upserts) ``/object/<bucket>/<name>``: store a file."""
    claims = caller(request)
    require_writer(claims)
    name = check_object_name(request.match_info["name"])
    upsert = request.method == "PUT" or request.headers.get("x-upsert", "").lower() == "true"
    return await store(
        request, request.match_info["bucket"], name, owner=owner_of(claims), upsert=upsert
    )


async def _serve(request: web.Request, bucket_id: str, name: str) -> web.StreamResponse:
    obj = await object_row(request, bucket_id, name)
    path = object_file(context_of(request).storage_root, bucket_id, obj["id"]) if obj else None
    if obj is None or path is None or not path.is_file():
        raise storage_error(404, "not_found", "Object not found")
    headers = {"Content-Type": obj["mimetype"] or "application/octet-stream"}
    headers["Cache-Control"] = obj["cache_control"] or "no-cache"
    if "download" in request.query:
        filename = request.query["download"] or name.rsplit("/", 1)[-1]
        safe = "".join(c for c in filename if c.isprintable() and c not in '"\\')
        headers["Content-Disposition"] = f'attachment; filename="{safe}"'
    return ObjectFileResponse(path, obj["etag"], headers)


async def _download(request: web.Request) -> web.StreamResponse:
    """GET ``/object[/authenticated]/<bucket>/<name>``: the file, for allowed callers."""
    claims = caller(request)
    bucket_id = request.match_info["bucket"]
    name = check_object_name(request.match_info["name"])
    bucket = await bucket_row(request, bucket_id)
    if not may_read(claims, bucket):
        raise storage_error(400, "not_found", "Object not found")
    return await _serve(request, bucket_id, name)


async def _download_public(request: web.Request) -> web.StreamResponse:
    """GET ``/object/public/<bucket>/<name>``: files of public buckets, no key needed."""
    bucket_id = request.match_info["bucket"]
    name = check_object_name(request.match_info["name"])
    bucket = await bucket_row(request, bucket_id)
    if not bucket["public"]:
        raise storage_error(400, "not_found", "Object not found")
    return await _serve(request, bucket_id, name)


async def _download_signed(request: web.Request) -> web.StreamResponse:
    """GET ``/object/sign/<bucket>/<name>?token=``: the file, if the token is good."""
    bucket_id = request.match_info["bucket"]
    name = check_object_name(request.match_info["name"])
    token = request.query.get("token")
    if not token:
        raise storage_error(400, "InvalidJWT", "a token query parameter is required")
    verify_token(context_of(request).jwt_secret, token, bucket_id, name)
    return await _serve(request, bucket_id, name)


def _expires_in(body: dict[str, Any]) -> int:
    raw = body.get("expiresIn")
    try:
        value = int(raw)  # type: ignore[arg-type]  # supabase-py sends a string
    except (TypeError, ValueError) as exc:
        raise storage_error(400, "InvalidRequest", "expiresIn must be a number") from exc
    if not 1 <= value <= 10 * 365 * 24 * 3600:
        raise storage_error(400, "InvalidRequest", "expiresIn is out of range")
    return value


async def json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object body (``{}`` when empty); raises ApiError 400 otherwise."""
    return await read_json_object(
        request, lambda why: storage_error(400, "InvalidRequest", f"body is {why}")
    )


async def _sign_one(request: web.Request) -> web.Response:
    """POST ``/object/sign/<bucket>/<name>`` {expiresIn}: ``{signedURL}``."""
    claims = caller(request)
    bucket_id = request.match_info["bucket"]
    name = check_object_name(request.match_info["name"])
    bucket = await bucket_row(request, bucket_id)
    expires = _expires_in(await json_body(request))
    if not may_read(claims, bucket) or await object_row(request, bucket_id, name) is None:
        raise storage_error(404, "not_found", "Object not found")
    token = sign_token(context_of(request).jwt_secret, bucket_id, name, expires)
    return web.json_response({"signedURL": f"/object/sign/{bucket_id}/{name}?token={token}"})


async def _sign_many(request: web.Request) -> web.Response:
    """POST ``/object/sign/<bucket>`` {expiresIn, paths}: one entry per path."""
    claims = caller(request)
    bucket_id = request.match_info["bucket"]
    bucket = await bucket_row(request, bucket_id)
    body = await json_body(request)
    expires = _expires_in(body)
    paths = body.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise storage_error(400, "InvalidRequest", "paths must be a list of strings")
    secret = context_of(request).jwt_secret
    out: list[dict[str, Any]] = []
    for path in paths[:1000]:
        try:
            name = check_object_name(path)
            ok = may_read(claims, bucket) and await object_row(request, bucket_id, name) is not None
        except Exception:  # a bad name is this entry's error, not the request's
            ok = False
        if ok:
            token = sign_token(secret, bucket_id, path, expires)
            url = f"/object/sign/{bucket_id}/{path}?token={token}"
            out.append({"error": None, "path": path, "signedURL": url})
        else:
            out.append({"error": "Either the object does not exist or you do not have access to it",
                        "path": path, "signedURL": None})  # fmt: skip
    return web.json_response(out)


def _whole_number(body: dict[str, Any], key: str, default: int) -> int:
    """``body[key]`` as an int (``default`` when absent, empty or 0); raises ApiError 400
    when it is not a number (strings of digits pass: supabase-py sends them)."""
    raw = body.get(key)
    if raw in (None, "", 0):
        return default
    try:
        return int(raw)
    except (TypeError, ValueError, OverflowError) as exc:  # text, lists, NaN, Infinity
        raise storage_error(400, "InvalidRequest", f"{key} must be a number") from exc


async def _list_objects(request: web.Request) -> web.Response:
    """POST ``/object/list/<bucket>`` {prefix, limit, offset, sortBy, search}."""
    claims = caller(request)
    bucket_id = request.match_info["bucket"]
    bucket = await bucket_row(request, bucket_id)
    if not may_read(claims, bucket):
        return web.json_response([])
    body = await json_body(request)
    prefix = str(body.get("prefix") or "").strip("/")
    if prefix:
        check_object_name(prefix)
        prefix += "/"
    limit = min(max(_whole_number(body, "limit", 100), 1), 1000)
    offset = max(_whole_number(body, "offset", 0), 0)
    search = str(body.get("search") or "").lower()
    raw_sort = body.get("sortBy")
    sort: dict[str, Any] = raw_sort if isinstance(raw_sort, dict) else {}
    column = sort.get("column", "name")
    descending = str(sort.get("order", "asc")).lower() == "desc"
    async with privileged(context_of(request)) as conn:
        rows = await (
            await conn.execute(
                f"SELECT {_OBJECT_COLUMNS} FROM storage.objects"
                " WHERE bucket_id = %s AND left(name, length(%s)) = %s",
                (bucket_id, prefix, prefix),
            )
        ).fetchall()
    folders: dict[str, dict[str, Any]] = {}
    files: list[dict[str, Any]] = []
    for row in rows:
        obj = object_dict(row)
        rest = obj["name"][len(prefix) :]
        head, slash, _ = rest.partition("/")
        if search and search not in head.lower():
            continue
        if slash:
            folders.setdefault(head, {"name": head, "id": None, "updated_at": None,
                                      "created_at": None, "last_accessed_at": None,
                                      "metadata": None})  # fmt: skip
        else:
            files.append(file_object({**obj, "name": head}))
    key = column if column in ("name", "created_at", "updated_at", "last_accessed_at") else "name"
    files.sort(key=lambda f: str(f.get(key) or ""), reverse=descending)
    entries = sorted(folders.values(), key=lambda f: str(f["name"]), reverse=descending) + files
    return web.json_response(entries[offset : offset + limit])


async def _remove(request: web.Request) -> web.Response:
    """DELETE ``/object/<bucket>`` {prefixes}: delete those objects; returns them."""
    claims = caller(request)
    require_writer(claims)
    bucket_id = request.match_info["bucket"]
    await bucket_row(request, bucket_id)
    body = await json_body(request)
    names = body.get("prefixes")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise storage_error(400, "InvalidRequest", "prefixes must be a list of strings")
    names = [check_object_name(n) for n in names[:1000]]
    owner = owner_of(claims)
    ctx = context_of(request)
    async with privileged(ctx) as conn:
        rows = await (
            await conn.execute(
                f"DELETE FROM storage.objects WHERE bucket_id = %s AND name = ANY(%s)"
                f" AND (%s::uuid IS NULL OR owner = %s::uuid)"
                f" RETURNING {_OBJECT_COLUMNS}",
                (bucket_id, names, owner, owner),
            )
        ).fetchall()
    removed = [object_dict(r) for r in rows]
    for obj in removed:
        object_file(ctx.storage_root, bucket_id, obj["id"]).unlink(missing_ok=True)
    return web.json_response([{**file_object(o), "bucket_id": bucket_id} for o in removed])


async def _info(request: web.Request) -> web.Response:
    """GET ``/object/info/<bucket>/<name>``: the object's metadata."""
    claims = caller(request)
    bucket_id = request.match_info["bucket"]
    name = check_object_name(request.match_info["name"])
    bucket = await bucket_row(request, bucket_id)
    obj = await object_row(request, bucket_id, name) if may_read(claims, bucket) else None
    if obj is None:
        raise storage_error(404, "not_found", "Object not found")
    return web.json_response({
        "id": obj["id"], "name": name, "version": obj["id"], "bucket_id": bucket_id,
        "size": obj["size"], "content_type": obj["mimetype"], "cache_control": obj["cache_control"],
        "etag": obj["etag"], "metadata": obj["user_metadata"], "last_modified": obj["updated_at"],
        "created_at": obj["created_at"],
    })  # fmt: skip


def add_routes(app: web.Application) -> None:
    """Register the object routes (specific prefixes before the generic ones; the app adds
    ``storage_transfer`` routes before these and ``storage_buckets`` routes after)."""
    base = "/storage/v1"
    r = app.router
    r.add_post(f"{base}/object/list/{{bucket}}", _list_objects)
    r.add_post(f"{base}/object/sign/{{bucket}}", _sign_many)
    r.add_post(f"{base}/object/sign/{{bucket}}/{{name:.+}}", _sign_one)
    r.add_get(f"{base}/object/sign/{{bucket}}/{{name:.+}}", _download_signed)
    r.add_get(f"{base}/object/public/{{bucket}}/{{name:.+}}", _download_public)
    r.add_get(f"{base}/object/authenticated/{{bucket}}/{{name:.+}}", _download)
    r.add_get(f"{base}/object/info/{{bucket}}/{{name:.+}}", _info)
    r.add_get(f"{base}/object/{{bucket}}/{{name:.+}}", _download)
    r.add_post(f"{base}/object/{{bucket}}/{{name:.+}}", _upload)
    r.add_put(f"{base}/object/{{bucket}}/{{name:.+}}", _upload)
    r.add_delete(f"{base}/object/{{bucket}}", _remove)
