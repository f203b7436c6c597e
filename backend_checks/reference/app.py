"""The aiohttp application of the reference server: Auth, REST, Storage and Realtime.

``build_app(ctx)`` mounts every service under Supabase's paths and adds what the
gateway of a real project does: CORS for browsers and WebViews, the ``apikey`` check
(header or query parameter), and gzip of JSON and text responses. Startup opens the
psycopg pool, installs the storage schema and loads the catalog; cleanup closes the pool
after Realtime's own cleanup. aiohttp runs no cleanup hook after a startup that failed or
was cancelled part-way: the runner's owner calls ``cleanup_failed_startup`` then.
Realtime (``backend_checks.reference.realtime``) is mounted when that module exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from backend_checks.reference import (
    auth,
    auth_admin,
    rest,
    storage,
    storage_buckets,
    storage_transfer,
)
from backend_checks.reference.context import ServerContext
from backend_checks.reference.db import current_catalog, open_pool
from backend_checks.reference.errors import ApiError
from backend_checks.reference.identity import CTX_KEY
from backend_checks.reference.storage_files import install_storage_schema

if TYPE_CHECKING:
    import psycopg_pool

__all__ = ["COMPRESS_MIN_BYTES", "MAX_BODY_BYTES", "build_app", "cleanup_failed_startup"]

log = logging.getLogger(__name__)

#: Largest request body: Supabase's standard uploads go to 50 MB (default file limit).
MAX_BODY_BYTES = 64 * 1024 * 1024

_ALLOW_HEADERS = (
    "apikey, authorization, x-client-info, content-type, prefer, range, range-unit, "
    "accept-profile, content-profile, x-upsert, x-metadata, cache-control, "
    "x-supabase-api-version, accept, accept-encoding"
)
_EXPOSE_HEADERS = "Content-Range, Range, Content-Location, Location, X-Total-Count, ETag"
_ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

#: Response bodies from this size on are compressed (Envoy's compressor default minimum).
COMPRESS_MIN_BYTES = 30

_NO_KEY = "No `apikey` request header or url param was found."
_BAD_KEY = "Double check your Supabase `anon` or `service_role` API key."

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _needs_apikey(request: web.Request) -> bool:
    """Signed and public objects are fetched without a key (``<img src>``), as on Supabase."""
    if request.method == "OPTIONS" or request.path in ("/", "/health"):
        return False
    if request.method in ("GET", "HEAD") and (
        request.path.startswith("/storage/v1/object/sign/")
        or request.path.startswith("/storage/v1/object/public/")
    ):
        return False
    return not request.path.startswith("/auth/v1/health")


def _cors(request: web.Request, response: web.StreamResponse) -> None:
    origin = request.headers.get("Origin")
    response.headers["Access-Control-Allow-Origin"] = origin or "*"
    if origin:
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Access-Control-Expose-Headers"] = _EXPOSE_HEADERS


def _accepts_gzip(request: web.Request) -> bool:
    """Whether the client takes gzip (``Accept-Encoding``, ``q=0`` refuses it)."""
    for item in request.headers.get("Accept-Encoding", "").lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return not params.strip().startswith("q=") or float(q) > 0
            except ValueError:
                return True
    return False


def _compress(request: web.Request, response: web.StreamResponse) -> None:
    """Gzip a JSON or text body the client accepts, as Supabase's gateway does: hosted
    projects compress API responses at Cloudflare, self-hosted ones with Envoy's compressor
    (JSON types, from 30 bytes on). Binary objects (images, video) and ranges pass as they
    are; their content types are not compressible."""
    if not isinstance(response, web.Response) or response.prepared:
        return
    body = response.body
    if not isinstance(body, bytes) or len(body) < COMPRESS_MIN_BYTES:
        return
    content_type = response.content_type
    textual = content_type.startswith("text/") or content_type.endswith("json")
    if not textual or response.status == 206 or "Content-Encoding" in response.headers:
        return
    if not _accepts_gzip(request):
        return
    response.enable_compression(web.ContentCoding.gzip)
    vary = response.headers.get("Vary")
    response.headers["Vary"] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"


@web.middleware
async def _gateway(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS, apikey and error answers for every route (the part Kong plays on Supabase)."""
    if request.method == "OPTIONS":
        preflight = web.Response(status=204)
        _cors(request, preflight)
        asked = request.headers.get("Access-Control-Request-Headers")
        preflight.headers["Access-Control-Allow-Headers"] = asked or _ALLOW_HEADERS
        preflight.headers["Access-Control-Allow-Methods"] = _ALLOW_METHODS
        preflight.headers["Access-Control-Max-Age"] = "86400"
        return preflight
    response: web.StreamResponse
    try:
        if _needs_apikey(request):
            key = request.headers.get("apikey") or request.query.get("apikey")
            if not key:
                raise ApiError(401, {"message": "No API key found in request", "hint": _NO_KEY})
            if not request.app[CTX_KEY].is_api_key(key):
                raise ApiError(401, {"message": "Invalid API key", "hint": _BAD_KEY})
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        if exc.empty_body:
            response = exc
        else:
            response = web.json_response({"message": exc.reason}, status=exc.status)
    except ConnectionResetError:
        # The client went away mid-request (a link cut, an upload given up): nothing is
        # wrong here. The answer goes nowhere, and aiohttp drops it quietly (re-raised,
        # aiohttp would log a traceback).
        log.info("client went away during %s %s", request.method, request.path)
        response = web.json_response({"message": "the request was cut short"}, status=400)
    except Exception:
        # Never a traceback to the client; the log has it.
        log.exception("unhandled error serving %s %s", request.method, request.path)
        response = web.json_response(
            {"code": "PGRST000", "message": "internal server error", "details": None,
             "hint": None}, status=500,
        )  # fmt: skip
    if not response.prepared:
        _cors(request, response)
        _compress(request, response)
    return response


async def _index(request: web.Request) -> web.Response:
    return web.json_response({"name": "devicelab reference backend", "ok": True})


def _startup(ctx: ServerContext) -> Callable[[web.Application], Awaitable[None]]:
    async def start(app: web.Application) -> None:
        ctx.storage_root.mkdir(parents=True, exist_ok=True)
        if ctx.pool is None:
            ctx.pool = await _open_pool(ctx)
        async with ctx.pool.connection() as conn:
            await install_storage_schema(conn)
        await current_catalog(ctx)

    return start


async def _open_pool(ctx: ServerContext) -> psycopg_pool.AsyncConnectionPool:
    """The opened pool of ``ctx``. Cancelled part-way (a start given up on), the pool would
    have gone on connecting with nothing left to close it: it finishes opening (within
    open_pool's timeout) and is closed before the cancel goes on."""
    opening = asyncio.ensure_future(open_pool(ctx.dsn, max_size=ctx.pool_max_size))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await (await opening).close()
        raise


def _cleanup(ctx: ServerContext) -> Callable[[web.Application], Awaitable[None]]:
    async def stop(app: web.Application) -> None:
        if ctx.pool is not None:
            await ctx.pool.close()
            ctx.pool = None

    return stop


def _mount_realtime(app: web.Application, ctx: ServerContext) -> None:
    """Let the realtime module add its routes and hooks, when it is installed."""
    name = "backend_checks.reference.realtime"
    if importlib.util.find_spec(name) is None:
        return
    module = importlib.import_module(name)
    add = getattr(module, "add_routes", None)
    if callable(add):
        add(app, ctx)


def build_app(ctx: ServerContext) -> web.Application:
    """The whole server as an aiohttp application (not started)."""
    app = web.Application(middlewares=[_gateway], client_max_size=MAX_BODY_BYTES)
    app[CTX_KEY] = ctx
    app.on_startup.append(_startup(ctx))
    app.router.add_get("/", _index)
    app.router.add_get("/health", _index)
    auth.add_routes(app)
    auth_admin.add_routes(app)
    rest.add_routes(app)
    storage_transfer.add_routes(app)  # before storage: /object/upload/... and /object/move
    storage.add_routes(app)
    storage_buckets.add_routes(app)
    _mount_realtime(app, ctx)
    # Appended last so it runs after the cleanup hooks of Realtime, which may still use it.
    app.on_cleanup.append(_cleanup(ctx))
    return app


async def cleanup_failed_startup(app: web.Application) -> None:
    """Run the cleanup hooks of ``app`` after its startup failed or was cancelled part-way
    (after ``runner.cleanup()``; nothing to do after a startup that completed, whose
    cleanup ran them). aiohttp runs none then, and the pool and Realtime's change feed
    stayed open. The hooks close what startup opened and skip what it had not."""
    if app.on_cleanup.frozen:
        return
    app.on_cleanup.freeze()
    await app.on_cleanup.send(app)
