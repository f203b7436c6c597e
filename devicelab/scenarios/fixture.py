"""The data a device run needs in the backend, made ready before the device starts.

On the embedded default (devicelab's own PostgreSQL) an empty database gets the same
generated data set as ``devicelab backend check`` (so whichever runs first, both see the
story's 100K messages). Then:

- user A: the generated user in the most conversations (the longest list, the most
  messages to search); user B: a member of the longest conversation (the generated data
  has no user in both), which B loads for memory_1000_messages;
- the run's own conversation of A and B (fixed id, created once), where delivery,
  subscription and reconnect messages go, away from the generated data;
- that longest conversation of B (memory_1000_messages);
- a few search terms that occur in the data, plus the story's own 'test query'.

Generated users sign in with the generator's password (backend_checks.datagen); it is a
public test password and still never written to results or logs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from devicelab.errors import BackendUnavailable
from devicelab.harness import UserLogin

if TYPE_CHECKING:
    import psycopg

__all__ = ["GENERATED_PASSWORD", "RUN_CONVERSATION_NAME", "RunFixture", "prepare"]

#: The password of every generated testuser<i>@example.com (backend_checks.datagen).
GENERATED_PASSWORD = "password123"
RUN_CONVERSATION_NAME = "devicelab device run"
_NAMESPACE = uuid.UUID("6d1f3c52-2f8a-4a55-9d55-6c0d2f6a1b7e")


class RunFixture(BaseModel):
    """Users A and B and the conversations a device run uses."""

    model_config = ConfigDict(frozen=True)

    user_a: UserLogin
    user_b: UserLogin
    user_a_id: str
    user_b_id: str
    conversation_id: str
    big_conversation_id: str
    big_conversation_messages: int
    a_conversations: int
    search_terms: list[str]
    seeded: bool = False


def prepare(dsn: str, *, say: Callable[[str], None]) -> RunFixture:
    """Seed an empty database, then pick the users and conversations of the run.

    Returns the RunFixture. Raises BackendUnavailable when the database fails or holds
    no generated users; UnsafeActionRefused when it is not empty but not ours.
    """
    import psycopg

    from backend_checks.db import connect

    conn = connect(dsn, autocommit=True)
    try:
        seeded = _seed_if_empty(conn, say)
        return _pick(conn, seeded)
    except psycopg.Error as exc:
        raise BackendUnavailable(
            f"preparing the run's data failed: {str(exc).strip().splitlines()[0]}",
            hint="check the database (devicelab backend check shows its state)",
        ) from exc
    finally:
        conn.close()


def _seed_if_empty(conn: psycopg.Connection[Any], say: Callable[[str], None]) -> bool:
    from backend_checks.check import DEFAULT_SEED_MESSAGES
    from backend_checks.datagen import DatagenParams
    from backend_checks.seed import ensure_schema, has_messages, seed_if_empty

    ensure_schema(conn)  # a managed cluster an older devicelab made gets this one's schema
    if has_messages(conn):
        return False
    say(f"seeding the empty database ({DEFAULT_SEED_MESSAGES:,} generated messages)")
    # Another run may be seeding it this moment: then this one waits and uses its data.
    params = DatagenParams(messages=DEFAULT_SEED_MESSAGES)
    return seed_if_empty(conn, params) is not None


def _pick(conn: psycopg.Connection[Any], seeded: bool) -> RunFixture:
    from backend_checks.words import WORDS

    generated = "^testuser[0-9]+@example\\.com$"
    row = conn.execute(
        """SELECT u.id::text, u.email, count(*) AS n
           FROM public.conversations c, unnest(c.participants) AS p(id)
           JOIN auth.users u ON u.id = p.id
           WHERE u.email ~ %s AND c.name IS DISTINCT FROM %s
           GROUP BY u.id, u.email ORDER BY n DESC, u.email LIMIT 1""",
        (generated, RUN_CONVERSATION_NAME),
    ).fetchone()
    if row is None:
        raise BackendUnavailable(
            "the database has no generated test users (testuser<i>@example.com)",
            hint="run the device checks on the embedded default, or seed with "
            "devicelab backend datagen",
        )
    a_id, a_email, a_conversations = str(row[0]), str(row[1]), int(row[2])
    row = conn.execute(
        """SELECT m.conversation_id::text, count(*) AS n FROM public.messages m
           JOIN public.conversations c ON c.id = m.conversation_id
           WHERE c.name IS DISTINCT FROM %s
           GROUP BY m.conversation_id ORDER BY n DESC LIMIT 1""",
        (RUN_CONVERSATION_NAME,),
    ).fetchone()
    big_id, big_count = (str(row[0]), int(row[1])) if row else ("", 0)
    row = conn.execute(
        """SELECT u.id::text, u.email FROM public.conversations c, unnest(c.participants) p(id)
           JOIN auth.users u ON u.id = p.id
           WHERE u.email ~ %s AND u.id <> %s::uuid
           ORDER BY (c.id::text = %s) DESC, u.email LIMIT 1""",
        (generated, a_id, big_id),
    ).fetchone()
    if row is None:
        raise BackendUnavailable(
            "the database has only one generated user; two are needed",
            hint="seed more: devicelab backend datagen --messages N --users 2 --allow-writes "
            "(or more users), or run the device checks on the embedded default",
        )
    b_id, b_email = str(row[0]), str(row[1])
    conversation_id = str(uuid.uuid5(_NAMESPACE, f"{a_id}:{b_id}"))
    with conn.transaction():
        conn.execute(
            """INSERT INTO public.conversations (id, type, name, participants, created_by)
               VALUES (%s, 'direct', %s, ARRAY[%s, %s]::uuid[], %s)
               ON CONFLICT (id) DO NOTHING""",
            (conversation_id, RUN_CONVERSATION_NAME, a_id, b_id, a_id),
        )
    rows = conn.execute(
        """SELECT w FROM unnest(%s::text[]) WITH ORDINALITY AS t(w, i)
           WHERE to_tsvector('english', w) <> ''::tsvector ORDER BY i LIMIT 3""",
        (list(WORDS),),
    ).fetchall()
    return RunFixture(
        user_a=UserLogin(email=a_email, password=GENERATED_PASSWORD),
        user_b=UserLogin(email=b_email, password=GENERATED_PASSWORD),
        user_a_id=a_id,
        user_b_id=b_id,
        conversation_id=conversation_id,
        big_conversation_id=big_id,
        big_conversation_messages=big_count,
        a_conversations=a_conversations,
        search_terms=[str(r[0]) for r in rows] + ["test query"],
        seeded=seeded,
    )
