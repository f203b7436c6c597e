"""Storage's data: the ``storage`` schema, safe object names, files on disk, signed tokens.

Object metadata lives in ``storage.buckets`` / ``storage.objects`` (created here, not in
the exposed schema, so REST cannot reach them). File bytes live under the storage root as
``<root>/<bucket>/<object id>``: names never become paths, so even a name that slipped past
:func:`check_object_name` could not leave the root. Signed URLs carry an HS256 JWT whose
``url`` claim is ``<bucket>/<name>``, as Supabase Storage's do.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
import psycopg
from aiohttp import web
from aiohttp.helpers import ETag

from backend_checks.reference.errors import storage_error

__all__ = [
    "DEFAULT_BUCKET",
    "DEFAULT_FILE_SIZE_LIMIT",
    "STORAGE_SCHEMA_SQL",
    "ObjectFileResponse",
    "check_bucket_id",
    "check_object_name",
    "install_storage_schema",
    "object_file",
    "sign_token",
    "stage_file",
    "verify_token",
]

DEFAULT_BUCKET = "media"
#: Supabase's default per-file limit on the free plan.
DEFAULT_FILE_SIZE_LIMIT = 50 * 1024 * 1024
_MAX_NAME = 1024

STORAGE_SCHEMA_SQL = """
SELECT pg_advisory_xact_lock(hashtext('devicelab.reference.storage'));
CREATE SCHEMA IF NOT EXISTS storage;
CREATE TABLE IF NOT EXISTS storage.buckets (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    owner uuid,
    public boolean NOT NULL DEFAULT false,
    file_size_limit bigint,
    allowed_mime_types text[],
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS storage.objects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bucket_id text NOT NULL REFERENCES storage.buckets (id),
    name text NOT NULL,
    owner uuid,
    size bigint NOT NULL,
    mimetype text,
    cache_control text,
    etag text,
    user_metadata jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_accessed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bucket_id, name)
);
CREATE INDEX IF NOT EXISTS objects_bucket_name_prefix
    ON storage.objects (bucket_id, name text_pattern_ops);
INSERT INTO storage.buckets (id, name, public, file_size_limit)
VALUES ('media', 'media', false, 52428800)
ON CONFLICT (id) DO NOTHING;
"""


async def install_storage_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the storage schema and the ``media`` bucket if missing (idempotent).

    Raises psycopg.Error when the database refuses (the caller translates it).
    """
    async with conn.transaction():
        for statement in STORAGE_SCHEMA_SQL.split(";\n"):
            if statement.strip():
                await conn.execute(statement)


def check_bucket_id(bucket: str) -> str:
    """``bucket`` if it is a plausible bucket id; raises ApiError 400 otherwise."""
    if not bucket or len(bucket) > 100 or not all(c.isalnum() or c in "-_." for c in bucket):
        raise storage_error(400, "InvalidBucketName", "The bucket name is invalid")
    if bucket in (".", ".."):
        raise storage_error(400, "InvalidBucketName", "The bucket name is invalid")
    return bucket


def check_object_name(name: str) -> str:
    """``name`` if it is a safe object key; raises ApiError 400 otherwise.

    Refused: empty, too long, absolute, NUL or control characters, backslashes, and
    empty, ``.`` or ``..`` segments (whatever the encoding they arrived in).
    """
    bad = (
        not name
        or len(name) > _MAX_NAME
        or name.startswith("/")
        or "\\" in name
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
        raise storage_error(400, "InvalidKey", f"Invalid key: {name[:200]!r}")
    return name


def object_file(root: Path, bucket: str, object_id: str) -> Path:
    """Where the bytes of object ``object_id`` of ``bucket`` are kept."""
    return root / check_bucket_id(bucket) / object_id


def stage_file(target: Path, chunks: list[bytes]) -> Path:
    """Write ``chunks`` to a temporary file beside ``target`` and return its path, for the
    caller to rename onto ``target`` once the object's row is written (a reader never sees
    half a file, and a failed write leaves the stored object as it was).

    Raises OSError on disk errors (nothing left behind).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def sign_token(
    secret: str, bucket: str, name: str, expires_in: int, *, extra: dict[str, Any] | None = None
) -> str:
    """A signed-URL token for ``bucket/name`` valid ``expires_in`` seconds.

    ``extra`` claims mark upload tokens (``{"kind": "upload", ...}``), which a download
    never accepts, and the other way round.
    """
    now = int(time.time())
    claims: dict[str, Any] = {"url": f"{bucket}/{name}", "iat": now, "exp": now + expires_in}
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(
    secret: str, token: str, bucket: str, name: str, *, kind: str = "download"
) -> dict[str, Any]:
    """The claims of ``token`` if it is a ``kind`` token for ``bucket/name``.

    Raises ApiError 400: InvalidJWT when expired, InvalidSignature when tampered, signed
    with another secret, for another object or of the other kind.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise storage_error(400, "InvalidJWT", "jwt expired") from exc
    except jwt.PyJWTError as exc:
        raise storage_error(400, "InvalidSignature", "invalid signature") from exc
    if claims.get("url") != f"{bucket}/{name}" or claims.get("kind", "download") != kind:
        raise storage_error(400, "InvalidSignature", "the token is for another object")
    return claims


class ObjectFileResponse(web.FileResponse):
    """A stored object's file (Range and conditional requests as aiohttp serves them),
    sent with the object's own ETag: the MD5 that upload stored and ``/object/info``
    reports, as Supabase Storage sends. aiohttp would put a tag of mtime and size.
    """

    def __init__(self, path: Path, etag: str | None, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers)
        self._object_etag = (etag or "").strip('"') or None

    @property
    def etag(self) -> ETag | None:
        """The ETag header's value (None when unset)."""
        # mypy sees the base property as an overloaded function, hence the ignores.
        return web.FileResponse.etag.fget(self)  # type: ignore[attr-defined,no-any-return]

    @etag.setter
    def etag(self, value: ETag | str | None) -> None:
        """Set the ETag header to the object's stored MD5, or to ``value`` when the object
        has none (None removes it). Returns None. Raises ValueError (aiohttp's) when the
        tag is not a valid ETag value."""
        # aiohttp assigns its own tag while preparing the file: keep the stored one.
        web.FileResponse.etag.fset(self, self._object_etag or value)  # type: ignore[attr-defined]
