"""``/storage/v1/object``: Supabase Storage's object API over local files.

Upload, download (private, public, signed), sign, list, info and remove. Each handler
checks the access rules (``storage_access``: who may read a bucket, write, or change an
object) before any file or row is touched; creating and deleting buckets needs the
service role (``storage_buckets``). Signed URLs are fetched with their token only.
Uploads (a multipart form or a raw body) are stored by ``storage_upload``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from backend_checks.reference.db import privileged
from backend_checks.reference.errors import read_json_object, storage_error
from backend_checks.reference.identity import context_of
from backend_checks.reference.storage_access import (
    OBJECT_COLUMNS,
    bucket_row,
    caller,
    may_read,
    object_dict,
    object_row,
    owner_of,
    require_writer,
)
from backend_checks.reference.storage_files import (
    ObjectFileResponse,
    check_object_name,
    object_file,
    sign_token,
    verify_token,
)
from backend_checks.reference.storage_upload import store

__all__ = ["add_routes", "file_object", "json_body"]


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
                f"SELECT {OBJECT_COLUMNS} FROM storage.objects"
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
                f" RETURNING {OBJECT_COLUMNS}",
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
