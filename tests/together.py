"""Run one piece of work on several threads at the same moment, for the tests of what
concurrent runs, servers and proxies share."""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(
    work: Callable[[], object], count: int, timeout_s: float = 120.0
) -> list[BaseException]:
    """Run ``work`` on ``count`` threads released together; returns what they raised (in
    no particular order), not lost in the threads. A thread still running after
    ``timeout_s`` is reported as a TimeoutError."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout_s)
    errors += [TimeoutError(f"{t.name} still running") for t in threads if t.is_alive()]
    return errors
