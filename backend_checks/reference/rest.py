"""``/rest/v1``: PostgREST's HTTP API over the catalog of the exposed schema.

Routes: ``GET|HEAD|POST|PATCH|DELETE /rest/v1/<relation>`` and ``GET|POST /rest/v1/rpc/<fn>``.
Each request: the caller's claims, the relation or function from the catalog (404 when
unknown), the URL parsed by ``parse.py``, SQL composed by ``query.py``, one transaction
as the caller's role (``db.as_caller``), and a PostgREST-shaped answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from backend_checks.reference import parse, query, readplan
from backend_checks.reference.catalog import EXPOSED_SCHEMAS, Catalog, Relation
from backend_checks.reference.context import AuthRejected
from backend_checks.reference.db import as_caller, current_catalog, reload_if_created
from backend_checks.reference.errors import ApiError, rest_error
from backend_checks.reference.identity import context_of, resolve_claims

__all__ = ["add_routes"]

_OBJECT_MEDIA = "application/vnd.pgrst.object+json"
_CSV_MEDIA = "text/csv"
#: The media types answered (``Accept``); CSV too on reads; PostgREST's plan types not.
_SERVED_MEDIA = frozenset(
    {"*/*", "application/*", "application/json", _OBJECT_MEDIA, "application/vnd.pgrst.object"}
)


def _check_accept(request: web.Request, *, csv: bool = False) -> bool:
    """Refuse an ``Accept`` that names none of the media types served, as PostgREST does
    (a client asking for CSV where it is not served must not get JSON labelled as
    something else). ``csv``: CSV is served here. Returns whether CSV is what the
    client asks for first (supabase-js ``.csv()`` sends ``Accept: text/csv``).

    Raises ApiError 406 (PGRST107).
    """
    header = request.headers.get("Accept", "")
    wanted = [item.split(";", 1)[0].strip().lower() for item in header.split(",")]
    wanted = [media for media in wanted if media]
    served = _SERVED_MEDIA | {_CSV_MEDIA} if csv else _SERVED_MEDIA
    first = next((media for media in wanted if media in served), None)
    if wanted and first is None:
        raise rest_error(
            406,
            "PGRST107",
            f"None of these media types are available: {', '.join(wanted)[:200]}",
        )
    return first == _CSV_MEDIA


def _claims(request: web.Request) -> dict[str, Any]:
    try:
        return resolve_claims(request)
    except AuthRejected as exc:
        code = "PGRST303" if exc.code == "jwt_expired" else "PGRST301"
        raise rest_error(401, code, exc.message) from exc


def _check_profile(request: web.Request) -> None:
    """Only the exposed schema is served (Accept-Profile / Content-Profile)."""
    for header in ("Accept-Profile", "Content-Profile"):
        value = request.headers.get(header)
        if value and value not in EXPOSED_SCHEMAS:
            raise rest_error(
                406,
                "PGRST106",
                f"The schema must be one of the following: {', '.join(EXPOSED_SCHEMAS)}",
            )


async def _relation(request: web.Request, name: str) -> Relation:
    ctx = context_of(request)
    catalog = await current_catalog(ctx)
    rel = catalog.relation(name)
    if rel is None:
        rel = (await reload_if_created(ctx, "relation", name)).relation(name)
    if rel is None:
        raise rest_error(
            404,
            "PGRST205",
            f"Could not find the table 'public.{name[:100]}' in the schema cache",
        )
    return rel


async def _compose[T](
    request: web.Request, build: Callable[[Relation, Catalog], T]
) -> tuple[Relation, T]:
    """``build(relation, catalog)`` for the request's relation; when it names a column or
    an embedding the snapshot lacks, reload the catalog (at most once a second) and build
    again, so columns and foreign keys added after startup work. Raises ApiError as
    ``build`` does.
    """
    ctx = context_of(request)
    name = request.match_info["name"]
    rel = await _relation(request, name)
    catalog = await current_catalog(ctx)
    try:
        return rel, build(rel, catalog)
    except ApiError as exc:
        if exc.body.get("code") not in ("42703", "PGRST200") or not catalog.stale():
            raise
    catalog = await current_catalog(ctx, reload=True)
    rel = await _relation(request, name)
    return rel, build(rel, catalog)


class _Url:
    """The query string of a request split into PostgREST parts (raises ApiError 400).

    ``filters``, ``order``, ``limit`` and ``offset`` are the top level's; ``embedded``
    holds those of embedded levels by path (``messages.order=`` -> ``("messages",)``).
    """

    def __init__(
        self, request: web.Request, *, arg_names: frozenset[str] = frozenset(), csv: bool = False
    ) -> None:
        #: The rows go out as CSV (only where ``csv``: a read).
        self.csv = _check_accept(request, csv=csv)
        self.args: dict[str, str] = {}
        levels: dict[tuple[str, ...], readplan.Level] = {}
        for key, value in request.query.items():
            if "\x00" in key or "\x00" in value:
                raise rest_error(400, "PGRST100", "NUL characters are not allowed")
            if key in parse.ROOT_PARAMS or key in {"apikey", ""}:
                continue
            last = key.rsplit(".", 1)[-1]
            if last in parse.LEVEL_PARAMS and "->" not in key:
                self._level_param(levels, key, last, value)
            elif key in arg_names:
                self.args[key] = value
            else:
                path, column = parse.split_path(key)
                levels.setdefault(path, readplan.Level()).filters.append(
                    parse.parse_filter_param(column, value)
                )
        root = levels.pop((), readplan.Level())
        self.embedded = levels
        self.filters = root.filters
        self.order = root.order
        self.limit, self.offset = root.limit, root.offset
        self.select = parse.parse_select(request.query.get("select"))
        rng = parse.parse_range_header(request.headers.get("Range"))
        if rng is not None:
            start, size = rng
            self.offset = (self.offset or 0) + start
            if size is not None:
                self.limit = size if self.limit is None else min(self.limit, size)
        self.prefer = parse.parse_prefer(request.headers.getall("Prefer", []))
        self.single = _OBJECT_MEDIA in request.headers.get("Accept", "")

    @staticmethod
    def _level_param(
        levels: dict[tuple[str, ...], readplan.Level], key: str, last: str, value: str
    ) -> None:
        """``[path.]order|limit|offset|[not.]and|[not.]or`` into the level of ``path``."""
        path, _ = parse.split_path(key)
        if last in ("and", "or"):
            negated = "not" in path
            path = tuple(part for part in path if part != "not")
            level = levels.setdefault(path, readplan.Level())
            level.filters.append(parse.parse_logic_param(("not." if negated else "") + last, value))
            return
        level = levels.setdefault(path, readplan.Level())
        if last == "order":
            level.order = parse.parse_order(value)
        elif last == "limit":
            level.limit = parse.parse_int("limit", value)
        else:
            level.offset = parse.parse_int("offset", value)

    def write_levels(self) -> dict[tuple[str, ...], readplan.Level]:
        """The embedded levels for a write's returned rows: filters only (PostgREST
        applies no embedded order or range to a mutation)."""
        return {path: readplan.Level(level.filters) for path, level in self.embedded.items()}


def _content_range(offset: int | None, n_rows: int, total: int | None) -> str:
    total_text = "*" if total is None else str(total)
    if n_rows == 0:
        return f"*/{total_text}"
    start = offset or 0
    return f"{start}-{start + n_rows - 1}/{total_text}"


def _range_status(offset: int | None, n_rows: int, total: int | None) -> int:
    """PostgREST's status for a counted read: 200, 206 when the rows returned are a part
    of the total, and an error (416, PGRST103) for an offset past the end."""
    if total is None:
        return 200
    start = offset or 0
    if start > total:
        raise rest_error(
            416,
            "PGRST103",
            "Requested range not satisfiable",
            details=f"An offset of {start} was requested, but there are only {total} rows.",
        )
    return 206 if n_rows < total else 200


def _check_single(n_rows: int) -> None:
    """Raise ApiError 406 (PGRST116) unless there is exactly one row (single-object mode)."""
    if n_rows != 1:
        raise rest_error(
            406,
            "PGRST116",
            "JSON object requested, multiple (or no) rows returned",
            details=f"The result contains {n_rows} rows",
        )


def _answer(
    status: int,
    rows_json: str | None,
    first_json: str | None,
    n_rows: int,
    *,
    single: bool,
    content_range: str,
    head: bool = False,
) -> web.Response:
    """The JSON response; in single-object mode exactly one row is required (406)."""
    if single:
        _check_single(n_rows)
        body = first_json
    else:
        body = rows_json
    headers = {"Content-Range": content_range}
    content_type = _OBJECT_MEDIA if single else "application/json"
    if head:
        return web.Response(status=status, headers=headers, content_type=content_type)
    return web.Response(
        status=status, text=body or "null", headers=headers, content_type=content_type,
        charset="utf-8",
    )  # fmt: skip


async def _read(request: web.Request) -> web.Response:
    """GET/HEAD a relation: select, filters, order, paging, count, single object."""
    claims = _claims(request)
    _check_profile(request)
    url = _Url(request, csv=True)
    _, built = await _compose(
        request,
        lambda r, c: (
            query.read_sql(r, url.select, url.filters, url.order, url.limit, url.offset, c,
                           url.embedded, csv=url.csv),
            query.count_sql(r, url.filters, url.select, c, url.embedded),
        ),
    )  # fmt: skip
    (statement, params), (count_stmt, count_params) = built
    total: int | None = None
    async with as_caller(context_of(request), claims, read_only=True) as conn:
        row = await (await conn.execute(statement, params)).fetchone()
        if url.prefer.count:
            count_row = await (await conn.execute(count_stmt, count_params)).fetchone()
            total = int(count_row[0]) if count_row else 0
    rows_json, first_json, n_rows = row if row else ("[]", None, 0)
    status = _range_status(url.offset, int(n_rows), total)
    content_range = _content_range(url.offset, int(n_rows), total)
    if url.csv:
        return _csv_answer(status, rows_json, first_json, content_range,
                           head=request.method == "HEAD")  # fmt: skip
    return _answer(
        status, rows_json, first_json, int(n_rows), single=url.single,
        content_range=content_range, head=request.method == "HEAD",
    )  # fmt: skip


def _csv_answer(
    status: int, lines: str | None, first_json: str | None, content_range: str, *, head: bool
) -> web.Response:
    """The CSV response, as PostgREST's: a header of the first row's keys (empty when
    there is no row), a newline, the rows' lines."""
    header = ",".join(json.loads(first_json or "{}"))
    headers = {"Content-Range": content_range}
    if head:
        return web.Response(status=status, headers=headers, content_type=_CSV_MEDIA)
    return web.Response(status=status, text=f"{header}\n{lines or ''}", headers=headers,
                        content_type=_CSV_MEDIA, charset="utf-8")  # fmt: skip


async def _json_body(request: web.Request) -> Any:
    if not request.body_exists:
        return None
    try:
        return json.loads(await request.read())
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise rest_error(400, "PGRST102", "Empty or invalid json") from exc


def _columns_of(url_columns: str | None, rows: list[dict[str, Any]]) -> list[str]:
    if url_columns:
        return [c.strip().strip('"') for c in parse.split_top_level(url_columns)]
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


async def _write(
    request: web.Request, statement: query.Query, params: list[Any], url: _Url, *, status: int
) -> web.Response:
    """Run one INSERT/UPDATE/DELETE statement as the caller and answer as PostgREST.

    Raises ApiError: 406 (PGRST116) in single-object mode when the statement touched
    other than one row, after rolling it back (as PostgREST does, whatever ``return=``
    asks), and the PostgREST translation of database errors.
    """
    claims = _claims(request)
    async with as_caller(context_of(request), claims) as conn:
        row = await (await conn.execute(statement, params)).fetchone()
        rows_json, first_json, n_rows = row if row else ("[]", None, 0)
        if url.single:
            _check_single(int(n_rows))  # raised inside the block: the write rolls back
    total = int(n_rows) if url.prefer.count else None
    content_range = f"*/{total if total is not None else '*'}"
    if url.prefer.return_ != "representation":
        return web.Response(
            status=204 if status == 200 else status, headers={"Content-Range": content_range}
        )
    return _answer(status, rows_json, first_json, int(n_rows), single=url.single,
                   content_range=content_range)  # fmt: skip


async def _insert(request: web.Request) -> web.Response:
    """POST a relation: one object or an array; upsert with ``Prefer: resolution=``."""
    _claims(request)
    _check_profile(request)
    url = _Url(request)
    body = await _json_body(request)
    rows = [body] if isinstance(body, dict) else body
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise rest_error(400, "PGRST102", "Body must be a JSON object or an array of objects")
    if not rows:
        return web.Response(status=201, headers={"Content-Range": "*/0"})
    columns = _columns_of(request.query.get("columns"), rows)
    if not columns and len(rows) > 1:
        raise rest_error(
            400, "PGRST102", "Rows without any column can only be inserted one at a time"
        )
    on_conflict = request.query.get("on_conflict")
    keys = [k.strip() for k in on_conflict.split(",")] if on_conflict else None
    _, (statement, params) = await _compose(
        request,
        lambda r, c: query.insert_sql(r, columns, json.dumps(rows), url.select, keys,
                                      url.prefer.resolution, c, url.write_levels(),
                                      defaults=url.prefer.missing == "default"),
    )  # fmt: skip
    return await _write(request, statement, params, url, status=201)


async def _update(request: web.Request) -> web.Response:
    """PATCH a relation: set the body's columns on the rows the filters select."""
    _claims(request)
    _check_profile(request)
    url = _Url(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise rest_error(400, "PGRST102", "Body must be a JSON object")
    _, (statement, params) = await _compose(
        request,
        lambda r, c: query.update_sql(r, list(body), json.dumps(body), url.select,
                                      url.filters, c, url.write_levels()),
    )  # fmt: skip
    return await _write(request, statement, params, url, status=200)


async def _delete(request: web.Request) -> web.Response:
    """DELETE from a relation the rows the filters select."""
    _claims(request)
    _check_profile(request)
    url = _Url(request)
    _, (statement, params) = await _compose(
        request,
        lambda r, c: query.delete_sql(r, url.select, url.filters, c, url.write_levels()),
    )
    return await _write(request, statement, params, url, status=200)


async def _rpc(request: web.Request) -> web.Response:
    """GET/POST ``/rpc/<fn>``: call a function with named arguments (JSON body or query)."""
    claims = _claims(request)
    _check_profile(request)
    ctx = context_of(request)
    name = request.match_info["fn"]
    catalog = await current_catalog(ctx)
    if not catalog.has_function(name):
        catalog = await reload_if_created(ctx, "function", name)
    every_arg = frozenset(
        a for fn in catalog.functions.get(("public", name), []) for a, _ in fn.args
    )
    url = _Url(request, arg_names=every_arg)
    if request.method == "POST":
        body = await _json_body(request)
        args: dict[str, Any] = {} if body is None else body
        if not isinstance(args, dict):
            raise rest_error(400, "PGRST102", "Function arguments must be a JSON object")
    else:
        args = dict(url.args)
    fn = catalog.function(name, set(args))
    if fn is None:
        listed = ", ".join(sorted(str(a)[:60] for a in args))
        raise rest_error(
            404,
            "PGRST202",
            f"Could not find the function public.{name[:100]}({listed}) in the schema cache",
        )
    given = [a for a, _ in fn.args if a in args]
    counted = bool(url.prefer.count) and fn.returns_rows
    statement, params = query.rpc_sql(
        fn,
        json.dumps(args),
        given,
        url.select,
        url.filters,
        url.order,
        url.limit,
        url.offset,
        url.embedded,
        catalog=catalog,
        count=counted,
    )
    total: int | None = None
    read_only = request.method in ("GET", "HEAD")
    async with as_caller(ctx, claims, read_only=read_only) as conn:
        row = await (await conn.execute(statement, params)).fetchone()
        if counted:
            total = int(row[3]) if row else 0
        rows_json, first_json, n_rows = row[:3] if row else ("null", None, 0)
        if url.single and fn.returns_set:
            # Raised inside the block: what the function wrote rolls back, as in PostgREST.
            _check_single(int(n_rows))
    if not fn.returns_set:
        # One value (or one composite row) comes back as itself, not in an array.
        value = rows_json if not fn.returns_rows else first_json
        return web.Response(text=value or "null", content_type="application/json")
    return _answer(
        _range_status(url.offset, int(n_rows), total), rows_json, first_json, int(n_rows),
        single=url.single, content_range=_content_range(url.offset, int(n_rows), total),
    )  # fmt: skip


async def _root(request: web.Request) -> web.Response:
    """``GET /rest/v1/``: a small description of what is exposed (not full OpenAPI)."""
    _claims(request)
    catalog = await current_catalog(context_of(request), reload=True)
    paths: dict[str, dict[str, Any]] = {f"/{name}": {} for (_, name) in catalog.relations}
    paths.update({f"/rpc/{name}": {} for (_, name) in catalog.functions})
    return web.json_response({"swagger": "2.0", "info": {"title": "devicelab reference"},
                              "paths": paths})  # fmt: skip


def add_routes(app: web.Application) -> None:
    """Register the ``/rest/v1`` routes on ``app``."""
    app.router.add_get("/rest/v1/", _root)
    app.router.add_get("/rest/v1/rpc/{fn}", _rpc)
    app.router.add_route("POST", "/rest/v1/rpc/{fn}", _rpc)
    app.router.add_get("/rest/v1/{name}", _read)  # also answers HEAD
    app.router.add_route("POST", "/rest/v1/{name}", _insert)
    app.router.add_route("PATCH", "/rest/v1/{name}", _update)
    app.router.add_route("DELETE", "/rest/v1/{name}", _delete)
