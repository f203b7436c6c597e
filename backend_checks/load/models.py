"""Typed models of a load run: what a worker is told, what it returns, what a step measured.

The worker process and the parent exchange these as JSON files (``WorkerSpec`` in,
``WorkerResult`` out); HDR histograms travel encoded (``HdrHistogram.encode()``, base64
of the compressed form) and are merged in the parent.

A spec names either a DSN (the users speak SQL) or an API URL (the users speak HTTP to
``/rest/v1`` as supabase-js does). The API key and the test users' password are never
in a spec: a load process reads them from its environment (:data:`ANON_KEY_ENV`,
:data:`PASSWORD_ENV`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ANON_KEY_ENV",
    "PASSWORD_ENV",
    "CpuReport",
    "Criterion",
    "Identity",
    "OpStats",
    "OpTally",
    "RunShape",
    "SecondTally",
    "StatsDelta",
    "StepResult",
    "WorkerResult",
    "WorkerSpec",
]


#: The environment variables a load process reads the API key and the password from.
ANON_KEY_ENV = "SUPABASE_ANON_KEY"
PASSWORD_ENV = "DEVICELAB_TEST_PASSWORD"

Transport = Literal["sql", "rest"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Identity(_Model):
    """An app user the load signs in as: the JWT claims and the conversations it is in.

    Over HTTP the user signs in with ``email``; ``user_id`` and ``conversations`` may then
    be empty (a remote API without a DSN): the user finds them after signing in.
    """

    user_id: str = ""
    claims: str = ""
    conversations: list[str] = Field(default_factory=list)
    email: str = ""


class WorkerSpec(_Model):
    """Everything one worker process needs (written by the parent as JSON)."""

    dsn: str = ""
    api_url: str = Field("", description="a Supabase API base URL: the users speak HTTP")
    identities: list[Identity]
    users: int = Field(ge=1)
    mix: dict[str, int]
    rate_per_user: float | None = Field(
        None, description="ops/s each user aims at (fixed-rate mode); None: closed loop"
    )
    duration_s: float = Field(gt=0)
    spawn_rate: float = Field(gt=0)
    connect_timeout_s: int = 10
    statement_timeout_ms: int = 30_000
    seed: int = 0
    out: str
    locust_stats: bool = Field(True, description="also fire Locust's request events")


class OpTally(_Model):
    """One operation's raw counts in one worker: histograms encoded, in microseconds."""

    ok: int = 0
    errors: int = 0
    late: int = Field(0, description="successes completed after the window closed")
    latency_hdr: str = ""  # from the intended start (coordinated omission corrected)
    service_hdr: str = ""  # from the actual start


class SecondTally(_Model):
    """One second of the measurement window in one worker (all operations together)."""

    t: int
    ok: int = 0
    errors: int = 0
    latency_hdr: str = ""


class RunShape(_Model):
    """How a run was paced and where it went, as a Locust master records it with its
    merged result, so the result can be judged elsewhere (``devicelab backend load
    --import``)."""

    transport: Transport = "sql"
    target: str = Field("", description="redacted DSN or API URL")
    mix: dict[str, int]
    rate_per_user: float | None = None
    duration_s: float = Field(
        gt=0, description="the window the users were in (mean over users; <= the spec's)"
    )
    spec_duration_s: float | None = Field(None, description="the spec's window")
    identities: int = 0
    workers: int = 0
    lost_workers: list[str] = Field(
        default_factory=list, description="workers that stopped reporting before the end"
    )
    started_at: str = ""
    finished_at: str = ""


class WorkerResult(_Model):
    """What a worker measured during the window."""

    users: int
    connected: int = Field(description="distinct users that connected at least once")
    peak_connected: int = Field(0, description="the most users connected at once")
    connect_failures: int
    exhaustion: int
    missed: int = Field(0, description="scheduled requests not sent before the window closed")
    ops: dict[str, OpTally]
    seconds: list[SecondTally]
    errors: dict[str, int] = Field(default_factory=dict)
    elapsed_s: float
    shape: RunShape | None = Field(
        None, description="how the run was paced (written by a Locust master)"
    )
    user_window_s: float = Field(0.0, description="the users' time in the window, summed")
    user_windows: int = Field(0, description="the users that window time is of")

    @property
    def transport(self) -> Transport:
        """How the users spoke to the server (from the shape; SQL when unknown)."""
        return self.shape.transport if self.shape else "sql"


class OpStats(_Model):
    """One operation over a step, merged over workers; times in milliseconds.

    ``throughput_per_s`` counts successes completed inside the window (as pgbench -T
    does); the latencies include the requests that were in flight when it closed, and
    only successful requests (``errors`` are counted, not timed: all zeros when none
    succeeded).
    """

    count: int
    errors: int
    throughput_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    service_p95_ms: float


class CpuReport(_Model):
    """Database CPU over the window, as a share of the machine (100 % = every core busy).

    ``method`` "psutil": measured on the server's processes (a local server);
    "pg_stat_statements": estimated from execution time (a remote server), as busy
    backends, with no percentage; "none": not available (``note`` says why).
    """

    method: Literal["psutil", "pg_stat_statements", "none"]
    mean_pct: float | None = None
    max_pct: float | None = None
    cores: int | None = None
    busy_backends: float | None = None
    client_mean_pct: float | None = None
    api_mean_pct: float | None = Field(
        None, description="the reference API server (this machine), when it served the load"
    )
    note: str = ""
    t: list[float] = Field(default_factory=list)
    pct: list[float] = Field(default_factory=list)


class StatsDelta(_Model):
    """pg_stat_statements and pg_stat_user_tables over one step (after minus before)."""

    statements_available: bool
    statements_note: str = ""
    statements: list[dict[str, Any]] = Field(default_factory=list)
    statements_exec_ms: float = 0.0
    statements_calls: int = 0
    tables_available: bool = True
    tables_note: str = ""
    tables: list[dict[str, Any]] = Field(default_factory=list)


class Criterion(_Model):
    """One criterion of "supported": passed (True/False) or not judged (None)."""

    name: str
    ok: bool | None
    value: float | None = None
    limit: str = ""
    detail: str = ""


class StepResult(_Model):
    """One load step (N users) merged over its workers."""

    users: int
    processes: int
    mix: dict[str, int]
    transport: Transport = "sql"
    mode: Literal["fixed-rate", "closed"]
    rate_per_s: float | None
    duration_s: float
    started_s: float = Field(description="seconds from the run's start to the window")
    connected: int
    peak_connected: int | None = Field(
        None, description="most users connected at once (summed over processes: at most)"
    )
    connect_failures: int
    exhaustion: int
    missed: int = 0
    lost_workers: list[str] = Field(
        default_factory=list, description="load processes lost before the step ended"
    )
    ops: dict[str, OpStats]
    total: OpStats
    errors: dict[str, int]
    cpu: CpuReport
    deltas: StatsDelta
    timeline_t: list[float]
    timeline_throughput: list[float]
    timeline_p95_ms: list[float]
