"""HTTP errors of the reference server, in the JSON shapes the Supabase clients parse.

Each service has its own shape: PostgREST ``{code, message, details, hint}``, GoTrue
``{code, error_code, msg}`` and Storage ``{statusCode, error, message}``. Handlers raise
:class:`ApiError`; the app's middleware turns it into the response. PostgreSQL errors are
translated here, in one place, by SQLSTATE (the way PostgREST maps them to statuses).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from aiohttp import web

__all__ = [
    "ApiError",
    "auth_error",
    "pg_error",
    "read_json_object",
    "rest_error",
    "storage_error",
]


class ApiError(Exception):
    """An error answer: ``status`` and the JSON ``body`` the client expects."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message") or body.get("msg") or str(status))
        self.status = status
        self.body = body

    def response(self) -> web.Response:
        """The error as an aiohttp JSON response."""
        return web.Response(
            status=self.status,
            text=json.dumps(self.body),
            content_type="application/json",
        )


def rest_error(
    status: int, code: str, message: str, *, details: str | None = None, hint: str | None = None
) -> ApiError:
    """A PostgREST-shaped error (``code`` is a PGRSTxxx code or a SQLSTATE)."""
    return ApiError(status, {"code": code, "details": details, "hint": hint, "message": message})


def auth_error(status: int, error_code: str, message: str) -> ApiError:
    """A GoTrue-shaped error (the pre-2024 shape both auth-js and supabase-py parse)."""
    return ApiError(status, {"code": status, "error_code": error_code, "msg": message})


def storage_error(status: int, error: str, message: str) -> ApiError:
    """A Storage-API-shaped error (``statusCode`` is a string, as storage-api sends it)."""
    return ApiError(status, {"statusCode": str(status), "error": error, "message": message})


#: SQLSTATE (or its class prefix) -> HTTP status, after PostgREST's table.
_STATUS_BY_SQLSTATE = {
    "23503": 409,  # foreign_key_violation
    "23505": 409,  # unique_violation
    "25006": 405,  # read_only_sql_transaction
    "42883": 404,  # undefined_function
    "42P01": 404,  # undefined_table
    "42501": 403,  # insufficient_privilege (401 for anon, below)
    "P0001": 400,  # raise_exception
    "57014": 504,  # query_canceled (statement_timeout)
}
_STATUS_BY_CLASS = {
    "08": 503,  # connection exception
    "09": 500,
    "0L": 403,  # invalid grantor
    "0P": 403,  # invalid role specification
    "22": 400,  # data exception
    "23": 400,  # integrity constraint violation
    "28": 403,  # invalid authorization
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "42": 400,  # syntax error or access rule violation (our SQL is fixed: bad input)
    "53": 503,
    "54": 500,
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 400,
    "XX": 500,
}


def pg_error(exc: psycopg.Error, *, role: str = "") -> ApiError:
    """The PostgREST answer for a PostgreSQL error raised while serving a request.

    Never carries the SQL text; carries the server's message, detail and hint as
    PostgREST does.
    """
    diag = exc.diag
    sqlstate = exc.sqlstate or ""
    status = _STATUS_BY_SQLSTATE.get(sqlstate) or _STATUS_BY_CLASS.get(sqlstate[:2], 500)
    if sqlstate == "42501" and role == "anon":
        status = 401
    if not sqlstate and isinstance(exc, psycopg.OperationalError):
        status = 503
    return rest_error(
        status,
        sqlstate or "PGRST000",
        diag.message_primary or "database error",
        details=diag.message_detail,
        hint=diag.message_hint,
    )


async def read_json_object(request: web.Request, fail: Callable[[str], ApiError]) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty).

    Raises ``fail(reason)`` (the caller's API error shape) when it is not a JSON object.
    """
    try:
        body = await request.json() if request.body_exists else {}
    except (ValueError, RecursionError) as exc:
        raise fail("not JSON") from exc
    if not isinstance(body, dict):
        raise fail("not a JSON object")
    return body
