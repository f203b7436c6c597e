"""Running the API checks' coroutines from synchronous code, wherever it is called from.

``asyncio.run`` refuses to start inside a thread that runs an event loop already: a
notebook cell, an async test, an async service calling ``run_check`` raised a bare
RuntimeError (and warned of a coroutine never awaited). There the coroutine runs on a
loop of its own in a thread of its own, and the caller waits for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

__all__ = ["run_blocking"]


def run_blocking[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on a new event loop and return its result: in this thread,
    or in a thread of its own when this one runs a loop already. Raises what ``coro``
    raises."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name="devicelab-blocking", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
