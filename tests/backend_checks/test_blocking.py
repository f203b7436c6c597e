"""The API checks called from code that runs an event loop already (a notebook cell)."""

from __future__ import annotations

import asyncio

import pytest

from backend_checks.api_checks import ApiOptions, SupabaseProject, api_preflight
from backend_checks.blocking import run_blocking
from devicelab.errors import BackendUnavailable


async def _answer() -> int:
    await asyncio.sleep(0)
    return 42


def test_a_coroutine_runs_to_its_end_inside_and_outside_a_running_loop() -> None:
    assert run_blocking(_answer()) == 42

    async def cell() -> int:  # a notebook cell: its loop runs
        return run_blocking(_answer())

    assert asyncio.run(cell()) == 42


def test_the_preflight_inside_a_running_loop_gives_a_devicelab_error() -> None:
    # asyncio.run() raised "cannot be called from a running event loop", a bare
    # RuntimeError, and warned of a coroutine never awaited.
    project = SupabaseProject(url="http://127.0.0.1:9", anon_key="k", email="a@b.c", password="p")

    async def cell() -> None:
        api_preflight(ApiOptions(project=project))

    with pytest.raises(BackendUnavailable, match=r"cannot reach http://127\.0\.0\.1:9"):
        asyncio.run(cell())


def test_a_ctrl_c_while_waiting_cancels_the_checks_instead_of_leaving_them_running() -> None:
    # The KeyboardInterrupt reached the caller, and the checks went on hitting the server
    # in their thread until their end.
    import _thread
    import threading
    import time

    seen: list[str] = []

    async def checks() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def cell() -> None:
        run_blocking(checks())

    threading.Timer(0.5, _thread.interrupt_main).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(cell())
    assert time.monotonic() - started < 10
    assert seen == ["cancelled"]
