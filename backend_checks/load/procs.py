"""The load processes seen from the parent: start one, read its protocol lines.

``spawn`` starts ``python -m backend_checks.load.worker SPEC.json`` with the spec written
next to its log; secrets it needs (an API key, a password) travel in its environment,
never in the spec file. ``event`` reads its next ``{"event": ...}`` line.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backend_checks.db import redact
from backend_checks.load.models import WorkerSpec
from devicelab.errors import ProbeFailed
from devicelab.files import write_private

__all__ = ["event", "forget", "spawn"]


def spawn(
    spec: WorkerSpec, path: Path, log: Path, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a load process on ``spec`` (written to ``path``), stderr to ``log``."""
    write_private(path, spec.model_dump_json())
    env = dict(os.environ) | (env_extra or {})
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "backend_checks.load.worker", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            bufsize=0,
            env=env,
        )


def event(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> dict[str, Any]:
    """The next protocol line of a worker (other output on its stdout is skipped).

    Reads the pipe unbuffered, so a line already read is never left behind in a buffer
    that ``select`` cannot see. Raises ProbeFailed (with the tail of its log) when the
    worker exits or stays silent too long.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pending = _PENDING.setdefault(proc.pid, b"")
    deadline = time.monotonic() + timeout_s
    while True:
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            _PENDING[proc.pid] = pending
            if line.startswith(b'{"event"'):
                found: dict[str, Any] = json.loads(line)
                return found
        left = deadline - time.monotonic()
        ready = select.select([fd], [], [], left)[0] if left > 0 else []
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            break
        pending += chunk
    proc.kill()
    lines = log.read_text(errors="replace").strip().splitlines()
    tail = lines[-3:]
    cause = _cause(lines[-40:])
    last = f": {redact(cause)}" if cause else ""
    raise ProbeFailed(
        f"a load process stopped or did not answer in time{last}",
        hint=f"its log is kept: {log}",
        command=" ".join(str(a) for a in proc.args),  # type: ignore[union-attr]
        stderr="\n".join(tail),
    )


#: A line that states a failure: an exception's last line ("psycopg.OperationalError: ...",
#: "MemoryError") or a log line at level ERROR/CRITICAL.
_ERROR_LINE = re.compile(
    r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b|.*\b(ERROR|CRITICAL|FATAL)\b)"
)


def _cause(lines: list[str]) -> str:
    """The line of a load process's log that says why it stopped: the last one that
    looks like an error, else the last line (Locust logs warnings and progress after the
    cause, e.g. "Your selected spawn rate is very high")."""
    stripped = [line.strip() for line in lines if line.strip()]
    for line in reversed(stripped):
        if _ERROR_LINE.match(line):
            return line
    return stripped[-1] if stripped else ""


#: Bytes read from each worker's stdout past its last protocol line, by pid.
_PENDING: dict[int, bytes] = {}


def forget(proc: subprocess.Popen[bytes]) -> None:
    """Drop what was buffered for ``proc`` (once it has exited)."""
    _PENDING.pop(proc.pid, None)
