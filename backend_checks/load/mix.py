"""The operations a simulated app user performs, as data: SQL, weight, target check.

Each operation runs the way PostgREST runs a supabase-js request: first the role and the
JWT claims are set (``IDENTITY_SQL``), then one statement, so row-level security applies
exactly as for the app. The weights are a busy chat session: mostly opening
conversations and the list, some sending and marking read, a little searching. The read
mix (``READ_MIX``) keeps the read operations with the same relative weights; it is what
``bench/load.py`` runs against pgbench.

Each operation also names the REST request supabase-js sends for it (``rest``): the
HTTP load mode (``backend_checks.load.rest_session``) sends exactly that to ``/rest/v1``,
and PostgREST (or our reference server) turns it into the same statement.

Nothing here imports Locust or gevent: the parent process and the bench read it too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "FULL_MIX",
    "IDENTITY_SQL",
    "OPERATIONS",
    "READ_MIX",
    "SEARCH_TERMS",
    "MixName",
    "Operation",
    "RestCall",
    "mix_weights",
    "operation",
]

MixName = Literal["full", "read"]

#: Run before each operation, as PostgREST does per request (session-level here: the
#: connection is in autocommit, so there is no transaction to scope a SET LOCAL).
IDENTITY_SQL = (
    "SELECT set_config('role', 'authenticated', false), set_config('request.jwt.claims', %s, false)"
)


ParamKind = Literal["conversation", "term", "content"]


class RestCall(BaseModel):
    """The request supabase-js sends for an operation.

    ``query`` and the string values of ``body`` may name a parameter in braces
    (``{conversation}``, ``{term}``, ``{content}``); the other body values are sent as they are.
    """

    model_config = ConfigDict(frozen=True)

    method: Literal["GET", "POST"]
    path: str
    query: str = ""
    body: dict[str, Any] = Field(default_factory=dict)


class Operation(BaseModel):
    """One operation of the mix: its SQL (psycopg ``%s`` parameters), its share of the mix,
    whether it writes, and the backend check whose p95 target it is judged against."""

    model_config = ConfigDict(frozen=True)

    name: str
    sql: str
    weight: int
    writes: bool
    target_check: str
    params: tuple[ParamKind, ...] = ()
    rest: RestCall


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        name="conversation_list",
        # supabase-js: from('conversation_list').select('*').order('last_message_at',
        # {ascending: false}).limit(50), the story's Task 3 test 1.
        sql="SELECT * FROM public.conversation_list "
        "ORDER BY last_message_at DESC NULLS LAST LIMIT 50",
        weight=25,
        writes=False,
        target_check="conversation_list",
        rest=RestCall(
            method="GET",
            path="/rest/v1/conversation_list",
            query="select=*&order=last_message_at.desc.nullslast&limit=50",
        ),
    ),
    Operation(
        name="fetch_messages",
        # Opening a conversation: its newest 50 messages (the story's test 2, per chat).
        sql="SELECT id, conversation_id, sender_id, content, type, media_url, created_at "
        "FROM public.messages WHERE conversation_id = %s "
        "ORDER BY created_at DESC LIMIT 50",
        weight=40,
        writes=False,
        target_check="message_fetch",
        params=("conversation",),
        rest=RestCall(
            method="GET",
            path="/rest/v1/messages",
            query="select=id,conversation_id,sender_id,content,type,media_url,created_at"
            "&conversation_id=eq.{conversation}&order=created_at.desc&limit=50",
        ),
    ),
    Operation(
        name="send_message",
        sql="SELECT id FROM public.send_message(%s, %s)",
        weight=10,
        writes=True,
        target_check="send_message",
        params=("conversation", "content"),
        rest=RestCall(
            method="POST",
            path="/rest/v1/rpc/send_message",
            body={"p_conversation_id": "{conversation}", "p_content": "{content}"},
        ),
    ),
    Operation(
        name="mark_as_read",
        sql="SELECT public.mark_as_read(%s)",
        weight=15,
        writes=True,
        target_check="mark_as_read",
        params=("conversation",),
        rest=RestCall(
            method="POST",
            path="/rest/v1/rpc/mark_as_read",
            body={"p_conversation_id": "{conversation}"},
        ),
    ),
    Operation(
        name="search_messages",
        sql="SELECT id, conversation_id, content, rank FROM public.search_messages(%s, NULL, 20)",
        weight=10,
        writes=False,
        target_check="message_search",
        params=("term",),
        rest=RestCall(
            method="POST",
            path="/rest/v1/rpc/search_messages",
            body={"p_query": "{term}", "p_limit": 20},
        ),
    ),
)

FULL_MIX: tuple[str, ...] = tuple(op.name for op in OPERATIONS)
READ_MIX: tuple[str, ...] = tuple(op.name for op in OPERATIONS if not op.writes)

#: Search terms from the generator's word list, skipping the most common words (a user
#: searches for "invoice", not "the"): mid to rare frequency, so results vary in size.
SEARCH_TERMS: tuple[str, ...] = (
    "meeting", "lunch", "dinner", "photo", "video", "weekend", "trip", "coffee", "train",
    "test query", "birthday", "holiday", "flight", "hotel", "ticket", "deploy", "server",
    "database", "invoice", "payment", "delivery", "recipe", "pizza", "concert", "doctor",
    "appointment", "football", "airport", "passport", "salary", "galaxy", "penguin",
)  # fmt: skip


def mix_weights(mix: MixName) -> dict[str, int]:
    """The operations of ``mix`` with their weights (operation name -> weight)."""
    names = FULL_MIX if mix == "full" else READ_MIX
    return {op.name: op.weight for op in OPERATIONS if op.name in names}


def operation(name: str) -> Operation:
    """The operation called ``name``. Raises KeyError."""
    for op in OPERATIONS:
        if op.name == name:
            return op
    raise KeyError(name)
