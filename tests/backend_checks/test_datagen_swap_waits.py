"""The swap waits for other sessions' locks without queueing their readers behind it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from backend_checks.datagen import DatagenParams, generate

TINY = DatagenParams(messages=2_000, users=50, conversations=100, seed=6)


def test_a_swap_behind_an_open_transaction_lets_readers_through_and_says_whom_it_waits_for(
    generate_db: Callable[[DatagenParams], str], caplog: pytest.LogCaptureFixture
) -> None:
    # Queued for its ACCESS EXCLUSIVE lock behind a session idle in a transaction, the
    # swap made a plain count of message_read_receipts wait 10 s, and said nothing.
    dsn = generate_db(TINY)
    caplog.set_level(logging.WARNING)
    holder = psycopg.connect(dsn)
    holder.execute("SELECT 1 FROM public.messages LIMIT 1")  # an open transaction
    holder_pid = holder.info.backend_pid
    errors: list[BaseException] = []

    def regenerate() -> None:
        try:
            with psycopg.connect(dsn) as conn:
                generate(conn, TINY.model_copy(update={"seed": 7}), allow_writes=True)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=regenerate)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while "waiting for other sessions" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"pid {holder_pid}" in caplog.text
        with psycopg.connect(dsn, autocommit=True) as reader:
            reader.execute("SET statement_timeout = '3s'")  # queued: the swap's 1 s, retried
            for _ in range(5):  # across several tries of the swap
                reader.execute("SELECT count(*) FROM public.message_read_receipts").fetchone()
                time.sleep(0.3)
    finally:
        holder.rollback()
        holder.close()
        thread.join(timeout=60)
    assert not errors, errors
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT value->'params'->>'seed' FROM public.devicelab_meta WHERE key = 'datagen'"
        ).fetchone()
    assert row == ("7",)  # the swap went through once the holder let go
