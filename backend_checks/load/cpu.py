"""Database CPU during a load window, sampled with psutil on a local server.

A server is local when the backend serving our own connection is a process on this
machine (same pid, a ``postgres`` process started when our session started); its
postmaster's children are the server. CPU is summed over them each interval, as a share
of the whole machine (100 % = every core busy), from the CPU each process used since
the window opened (a backend that connected during the ramp brings no ramp time in).

For a remote server (Supabase, RDS) psutil cannot see it: the documented alternative is
the provider's CPU metric for the window, and what we report is the busy time from
pg_stat_statements (total execution time over wall time = average busy backends).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    import psycopg

__all__ = ["CpuSampler", "local_server"]


def local_server(conn: psycopg.Connection[Any]) -> psutil.Process | None:
    """The postmaster of ``conn``'s server when it runs on this machine, else None."""
    row = conn.execute(
        "SELECT pg_backend_pid(), extract(epoch FROM backend_start) FROM pg_stat_activity "
        "WHERE pid = pg_backend_pid()"
    ).fetchone()
    if row is None:
        return None
    pid, started = int(row[0]), float(row[1])
    try:
        proc = psutil.Process(pid)
        if "postgres" not in proc.name() and "postgres" not in " ".join(proc.cmdline()[:1]):
            return None
        if abs(proc.create_time() - started) > 2.0:
            return None
        return proc.parent()
    except (psutil.Error, OSError):
        return None


class CpuSampler:
    """Samples the CPU of a process tree (and optionally others) in a background thread.

    Lifecycle: ``start()`` primes the counters, ``stop()`` ends sampling; ``t``/``pct``
    then hold one point per interval (seconds since start, percent of the machine).
    ``extra`` (the load processes) and ``api`` (a local API server: the reference
    server serving an HTTP load) are summed apart, never into the database's share.
    """

    def __init__(self, root: psutil.Process | None, *, interval_s: float = 1.0) -> None:
        self.root = root
        self.extra: list[psutil.Process] = []
        self.api: list[psutil.Process] = []
        self.api_used_s = 0.0
        self.interval_s = interval_s
        self.cores = psutil.cpu_count() or 1
        self.t: list[float] = []
        self.pct: list[float] = []
        self.extra_pct: list[float] = []
        self.used_s = 0.0
        self.extra_used_s = 0.0
        self.wall_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base: dict[int, float] = {}

    def _procs(self) -> list[psutil.Process]:
        if self.root is None:
            return []
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    @staticmethod
    def _cpu(proc: psutil.Process) -> float | None:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def _total(self, procs: list[psutil.Process], seen: dict[int, float]) -> float:
        total = 0.0
        for proc in procs:
            now = self._cpu(proc)
            if now is None:
                continue
            total += now - seen.get(proc.pid, 0.0)
            seen[proc.pid] = now
        return total

    def start(self) -> None:
        """Prime the counters (CPU used before now is not counted) and start sampling."""
        self._base = {}
        self._total(self._procs(), self._base)
        self._extra_base: dict[int, float] = {}
        self._total(self.extra, self._extra_base)
        self._api_base: dict[int, float] = {}
        self._total(self.api, self._api_base)
        self._thread = threading.Thread(target=self._loop, name="devicelab-cpu", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        started = last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            used = self._total(self._procs(), self._base)
            extra = self._total(self.extra, self._extra_base)
            self.api_used_s += self._total(self.api, self._api_base)
            wall = max(now - last, 1e-6) * self.cores
            self.used_s += used
            self.extra_used_s += extra
            self.wall_s += now - last
            self.t.append(round(now - started, 3))
            self.pct.append(round(100 * used / wall, 2))
            self.extra_pct.append(round(100 * extra / wall, 2))
            last = now

    def stop(self) -> None:
        """Stop sampling (waits for the thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def mean_pct(self, extra: bool = False, api: bool = False) -> float | None:
        """CPU over the whole sampled time as a share of the machine (time-weighted: a
        sampler delayed by a busy machine makes longer intervals, not heavier ones): the
        server's, or the load processes' (``extra``), or the API server's (``api``; None
        when there is none)."""
        if self.wall_s <= 0 or (api and not self.api):
            return None
        used = self.api_used_s if api else self.extra_used_s if extra else self.used_s
        return round(100 * used / (self.wall_s * self.cores), 2)
