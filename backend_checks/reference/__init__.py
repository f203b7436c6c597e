"""A local Supabase-compatible backend over PostgreSQL (Auth, REST, Storage, Realtime).

Used when no real Supabase project is configured, and by the tests: the real supabase-js
and supabase-py clients talk to it unchanged. Start it with :class:`ReferenceServer` or
``devicelab backend serve``. Importing this package is cheap: the server modules load
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend_checks.reference.context import AuthRejected, ServerContext
    from backend_checks.reference.server import ReferenceServer

__all__ = ["AuthRejected", "ReferenceServer", "ServerContext"]

_WHERE = {
    "AuthRejected": "backend_checks.reference.context",
    "ServerContext": "backend_checks.reference.context",
    "ReferenceServer": "backend_checks.reference.server",
}


def __getattr__(name: str) -> Any:
    """Load the public classes lazily (aiohttp and psycopg only when used)."""
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
