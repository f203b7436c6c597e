"""Running the API checks' coroutines from synchronous code, wherever it is called from.

``asyncio.run`` refuses to start inside a thread that runs an event loop already: a
notebook cell, an async test, an async service calling ``run_check`` raised a bare
RuntimeError (and warned of a coroutine never awaited). There the coroutine runs on a
loop of its own in a thread of its own, and the caller waits for it: the caller's loop
is blocked meanwhile, so a server on that same loop (``async with ReferenceServer``)
cannot answer it: there, await the async forms (``run_realtime_checks``,
``run_storage_checks``). A Ctrl-C while it waits cancels the coroutine, then is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Coroutine
from typing import Any

__all__ = ["run_blocking"]

#: How long a cancelled coroutine gets to finish its cleanup (delete its test messages).
_CANCEL_GRACE_S = 15.0


def run_blocking[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on a new event loop and return its result: in this thread,
    or in a thread of its own when this one runs a loop already. Raises what ``coro``
    raises; an interruption while waiting (KeyboardInterrupt) cancels ``coro`` first."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(loop.run_until_complete(task))
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="devicelab-blocking", daemon=True)
    thread.start()
    # asyncio.run's own Ctrl-C handler only asks the caller's loop to cancel, and that
    # loop is blocked here: the plain KeyboardInterrupt while we wait.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while thread.is_alive():
            thread.join(timeout=0.2)  # short waits: a signal is handled between them
    except BaseException:
        with contextlib.suppress(RuntimeError):  # its loop closed already: it has ended
            loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=_CANCEL_GRACE_S)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if error:
        raise error[0]
    return result[0]
