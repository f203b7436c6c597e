"""Seeding the shared embedded database when several runs start on it at once."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from backend_checks import check
from backend_checks.datagen import DatagenParams
from backend_checks.seed import seed_if_empty
from devicelab.scenarios.fixture import RunFixture, prepare


def test_two_runs_starting_on_one_empty_database_seed_it_once(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two `devicelab run`s (or xdist workers) found the database empty together and both
    # seeded: the second replaced the tables under the first, whose run conversation
    # vanished and whose Realtime filters were refused.
    monkeypatch.setattr(check, "DEFAULT_SEED_MESSAGES", 5_000)
    start = threading.Barrier(2)
    fixtures: list[RunFixture] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            fixtures.append(prepare(empty_db, say=lambda _: None))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(f.seeded for f in fixtures) == [False, True]
    assert fixtures[0].conversation_id == fixtures[1].conversation_id
    with psycopg.connect(empty_db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM public.conversations WHERE id = %s",
            (fixtures[0].conversation_id,),
        ).fetchone()
        marks: Any = conn.execute("SELECT count(*) FROM public.messages").fetchone()
    assert row == (1,)  # the first run's conversation survived the second's start
    assert marks[0] == 5_000


def test_a_database_with_messages_is_not_seeded_again(empty_db: str) -> None:
    params = DatagenParams(messages=2_000, users=50, conversations=100, seed=3)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert seed_if_empty(conn, params) is not None
        conn.execute("DELETE FROM public.messages WHERE ctid IN"
                     " (SELECT ctid FROM public.messages LIMIT 10)")  # fmt: skip
        assert seed_if_empty(conn, params) is None
        row = conn.execute("SELECT count(*) FROM public.messages").fetchone()
    assert row == (1_990,)  # kept as it was, not regenerated
