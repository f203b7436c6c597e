"""The load process: ``python -m backend_checks.load.worker SPEC.json``.

Runs Locust's local runner with :class:`~backend_checks.load.locustfile.AppUser` in this
process only (its gevent patching stays here). Protocol with the parent, one JSON object
per line:

    worker -> {"event": "ready", "connected": n, "failed": m}   every user tried to connect
    parent -> "go <epoch seconds>"                                the window opens then
    worker -> {"event": "done", "out": path}                      results written (JSON)

Exit status 0 when the result was written, 2 on a bad spec, 3 when Locust failed.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]

_READY_TIMEOUT_S = 300.0


def _say(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run one worker from the spec file named in ``argv``; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    # Locust first: it monkey-patches the standard library before anything else loads.
    import os

    import gevent
    from gevent.fileobject import FileObjectPosix
    from locust import events
    from locust.env import Environment

    from backend_checks.load import locustfile
    from backend_checks.load.models import WorkerSpec

    with contextlib.suppress(OSError):
        # Under a closed loop a thousand backends are runnable at once; at equal priority
        # the load process gets 1/1000 of the CPU and its users sit ready but unscheduled
        # between requests (measured: ~1.5 s gaps). The generator must not be starved by
        # the server it measures. Without the privilege we keep the default priority.
        os.nice(-20)
    if len(args) != 1:
        sys.stderr.write("usage: python -m backend_checks.load.worker SPEC.json\n")
        return 2
    spec = WorkerSpec.model_validate_json(Path(args[0]).read_text())
    recorder = locustfile.configure(spec)
    env = Environment(user_classes=[locustfile.AppUser], events=events)
    runner = env.create_local_runner()
    runner.start(spec.users, spawn_rate=spec.spawn_rate)
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while recorder.started_users < spec.users and time.monotonic() < deadline:
        gevent.sleep(0.05)
    _say("ready", connected=recorder.connected, failed=recorder.connect_failures)

    line = FileObjectPosix(sys.stdin.fileno(), "r").readline().split()
    if len(line) != 2 or line[0] != "go":
        runner.quit()
        return 2
    # The parent names the window in wall-clock seconds; users time on perf_counter.
    t0 = time.perf_counter() + (float(line[1]) - time.time())
    recorder.open(t0)
    started = time.perf_counter()
    gevent.sleep(max(0.0, recorder.deadline - time.perf_counter()))
    # Users stop on their own at the deadline; in-flight requests get time to finish.
    grace = time.perf_counter() + spec.statement_timeout_ms / 1000 + 5
    while runner.user_count > 0 and time.perf_counter() < grace:
        gevent.sleep(0.05)
    runner.quit()
    result = recorder.result(time.perf_counter() - started)
    Path(spec.out).write_text(result.model_dump_json())
    _say("done", out=spec.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
