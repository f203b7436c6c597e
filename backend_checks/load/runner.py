"""The parent side of a load run: identities, the steps one after the other, the run.

Driven by :func:`run_load` (SQL) or ``backend_checks.load.api.run_rest_load`` (HTTP);
each step (N users) is ``backend_checks.load.step.run_step``. Steps run one after the
other (100 then 1000 users); each is put in the run's :class:`LoadProgress` as soon as it
is measured. Locust and gevent live only in the worker processes: this module imports
neither.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

from backend_checks.db import connect, redact
from backend_checks.load import dbstats
from backend_checks.load.cpu import local_server
from backend_checks.load.mix import MixName, mix_weights, operation
from backend_checks.load.models import Identity, StepResult, WorkerSpec
from backend_checks.load.step import Database, run_step
from devicelab.errors import BadInput, ProbeFailed, UnsafeActionRefused, first_line
from devicelab.files import write_private

__all__ = [
    "DEFAULT_ACCOUNTS",
    "LoadOptions",
    "LoadProgress",
    "LoadRun",
    "LoadTarget",
    "fetch_identities",
    "generated_identities",
    "refuse_writes",
    "run_load",
    "run_target",
    "scratch_writes",
    "spec_file",
    "write_spec",
]

_IDENTITIES_SQL = """
SELECT u.id::text, (array_agg(c.id::text ORDER BY c.last_message_at DESC NULLS LAST))[1:20]
FROM public.conversations c CROSS JOIN LATERAL unnest(c.participants) AS u(id)
GROUP BY u.id ORDER BY u.id LIMIT %s
"""
_EMAILS_SQL = "SELECT id::text, email FROM auth.users WHERE id::text = ANY(%s)"
#: Generated users signed in over HTTP without a DSN, unless told: the reference server
#: seeds 100, datagen makes 1000 by default; users beyond share their sessions.
DEFAULT_ACCOUNTS = 100


class LoadOptions(BaseModel):
    """How to load: the steps, the window, the mix and the pace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: list[int] = Field(default_factory=lambda: [100, 1000], min_length=1)
    duration_s: float = Field(60.0, gt=0)
    mix: MixName = "full"
    closed: bool = Field(False, description="closed loop: each user sends back to back")
    # Finite: an infinite rate has no schedule (every interval is 0).
    rate: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="total ops/s (fixed-rate mode)"
    )
    per_user_rate: float = Field(
        0.2, gt=0, allow_inf_nan=False, description="ops/s per user when rate is unset"
    )
    processes: int | None = Field(None, ge=1, description="load processes (default: by users)")
    spawn_rate: float = Field(250.0, gt=0, description="users connected per second")
    allow_writes: bool = False
    seed: int = 1
    locust_stats: bool = Field(False, description="also fire Locust's request events")

    def rate_per_user(self, users: int) -> float | None:
        """The ops/s each of ``users`` aims at, or None in the closed loop."""
        if self.closed:
            return None
        return self.rate / users if self.rate else self.per_user_rate


class LoadRun(BaseModel):
    """A whole load run: where, when, how, and one StepResult per step."""

    target: str
    started_at: datetime
    finished_at: datetime
    options: LoadOptions
    identities: int
    steps: list[StepResult]
    notes: list[str] = Field(default_factory=list, description="what was not measured, and why")


@dataclass
class LoadProgress:
    """What a run has measured so far, filled in as it goes (each step once it is
    measured), so a run that stops early (its server went away, Ctrl-C) still leaves its
    finished steps, and the step the server went away in, to be written out."""

    target: str = ""
    started_at: datetime | None = None
    options: LoadOptions | None = None
    identities: int = 0
    steps: list[StepResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def run(self) -> LoadRun | None:
        """The run so far (``finished_at`` is now: mark it unfinished where it is
        written), or None when it had not started."""
        if self.started_at is None or self.options is None:
            return None
        return LoadRun(
            target=self.target,
            started_at=self.started_at,
            finished_at=datetime.now(UTC),
            options=self.options,
            identities=self.identities,
            steps=list(self.steps),
            notes=list(self.notes),
        )


@dataclass
class LoadTarget:
    """Where the users go: a DSN (SQL), or an API URL with an optional DSN for the
    identities, the statistics deltas and the database CPU.

    ``env`` is handed to the load processes only (API key, password); ``api_process``
    is a local API server whose CPU is reported apart (the reference server).
    """

    label: str
    dsn: str = field(default="", repr=False)
    api_url: str = ""
    accounts: int = 0
    env: dict[str, str] = field(default_factory=dict, repr=False)
    api_process: psutil.Process | None = None
    no_dsn_note: str = ""


def fetch_identities(conn: Any, count: int, *, emails: bool = False) -> list[Identity]:
    """Up to ``count`` users that are in at least one conversation, with their
    conversations (and their sign-in emails when ``emails``: users without one are left
    out). Raises BadInput when the database holds none."""
    rows = conn.execute(_IDENTITIES_SQL, (count,)).fetchall()
    found = {}
    if emails and rows:
        found = dict(conn.execute(_EMAILS_SQL, ([r[0] for r in rows],)).fetchall())
        rows = [r for r in rows if found.get(r[0])]
    if not rows:
        sees_all = conn.execute(
            "SELECT rolsuper OR rolbypassrls OR pg_has_role(current_user,"
            " (SELECT relowner FROM pg_class WHERE oid = 'public.conversations'::regclass),"
            " 'USAGE') FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if sees_all is not None and not sees_all[0]:
            # Row-level security shows this role none of the conversations there may be.
            raise BadInput(
                "no conversations are visible to the DSN's user (row-level security applies to it)",
                hint="connect as the tables' owner or a role with BYPASSRLS (e.g. postgres):"
                " the users' identities are read before they act as themselves",
            )
        raise BadInput(
            "the database has no conversations to load",
            hint="generate data first: devicelab backend datagen --dsn DSN --messages 100000"
            " --allow-writes",
        )
    return [
        Identity(
            user_id=uid,
            claims=json.dumps({"sub": uid, "role": "authenticated", "aud": "authenticated"}),
            conversations=list(convs),
            email=str(found.get(uid) or ""),
        )
        for uid, convs in rows
    ]


def write_spec(dsn: str, options: LoadOptions, users: int, path: Path) -> Path:
    """Write the WorkerSpec of a ``users`` step for Locust's own master/worker mode
    (``DEVICELAB_LOAD_SPEC``); every worker process runs the users Locust gives it.

    Raises UnsafeActionRefused, BadInput, BackendUnavailable as :func:`run_load`.
    """
    weights = mix_weights(options.mix)
    refuse_writes(options, weights)
    with connect(dsn, autocommit=True) as conn:
        identities = fetch_identities(conn, users)
    return spec_file(path, options, users, weights, identities, dsn=dsn)


def spec_file(
    path: Path,
    options: LoadOptions,
    users: int,
    weights: dict[str, int],
    identities: list[Identity],
    *,
    dsn: str = "",
    api_url: str = "",
) -> Path:
    """Write the WorkerSpec of a step to ``path`` (users speak SQL to ``dsn`` or HTTP to
    ``api_url``), mode 0600 from its creation (a DSN may hold a password); returns
    ``path``. Raises OSError when it cannot be written."""
    spec = WorkerSpec(
        dsn=dsn,
        api_url=api_url,
        identities=identities,
        users=users,
        mix=weights,
        rate_per_user=options.rate_per_user(users),
        duration_s=options.duration_s,
        spawn_rate=options.spawn_rate,
        seed=options.seed,
        out="",
    )
    return write_private(path, spec.model_dump_json())


def refuse_writes(options: LoadOptions, weights: dict[str, int]) -> None:
    """Raise UnsafeActionRefused when the mix writes and writes were not allowed."""
    if any(operation(n).writes for n in weights) and not options.allow_writes:
        raise UnsafeActionRefused(
            "the full mix sends messages and marks them read: refused without --allow-writes",
            hint="add --allow-writes (a scratch database; one holding only a `backend datagen`"
            " data set needs none), or --mix read",
        )


def scratch_writes(dsn: str, options: LoadOptions) -> LoadOptions:
    """``options`` with writes allowed when ``dsn``'s database holds only a data set of
    ``backend datagen`` (a scratch one: see datagen.scratch_state), else as given.

    Raises UnsafeActionRefused (exit 2) when the mix writes, writes were not allowed and
    the role may not read what tells whether the data is ours: the refusal names the
    denial and the GRANT that lets it tell. Raises as datagen.scratch_state.
    """
    from backend_checks.datagen import scratch_state

    if options.allow_writes:
        return options
    state = scratch_state(dsn)
    if state.ours:
        return options.model_copy(update={"allow_writes": True})
    writes = any(operation(n).writes for n in mix_weights(options.mix))
    if writes and state.unknown:
        raise UnsafeActionRefused(
            f"the full mix writes, and this role cannot tell whether {redact(dsn, dsn)} holds"
            f" only a `backend datagen` data set ({state.unknown})",
            hint=f"{state.grant}; or --mix read (writes nothing), or --allow-writes",
        )
    return options


def run_load(
    dsn: str,
    options: LoadOptions,
    *,
    workdir: Path | None = None,
    progress: LoadProgress | None = None,
) -> LoadRun:
    """Run every step of ``options`` against ``dsn`` (the users speak SQL); returns the
    LoadRun.

    Raises UnsafeActionRefused (a writing mix without ``allow_writes``), BadInput (no data),
    BackendUnavailable (the server cannot be reached by us), ProbeFailed (a load process
    failed). Connection exhaustion of the simulated users is measured, not raised.
    ``progress`` is filled with each step as it is measured (see LoadProgress).
    """
    target = LoadTarget(label=redact(dsn, dsn), dsn=dsn)
    return run_target(target, options, workdir=workdir, progress=progress)


def generated_identities(accounts: int) -> list[Identity]:
    """The generated users ``testuser1..accounts@example.com`` (they sign in over HTTP)."""
    return [Identity(email=f"testuser{i}@example.com") for i in range(1, accounts + 1)]


def run_target(
    target: LoadTarget,
    options: LoadOptions,
    *,
    workdir: Path | None = None,
    progress: LoadProgress | None = None,
) -> LoadRun:
    """Run every step of ``options`` against ``target`` (see :func:`run_load`).

    Raises as :func:`run_load`, and BackendUnavailable when the API or the database went
    away during a step (that step, measured, is in ``progress`` first)."""
    weights = mix_weights(options.mix)
    if not target.dsn:
        refuse_writes(options, weights)
    progress = progress if progress is not None else LoadProgress()
    started_at = datetime.now(UTC)
    run_start = time.monotonic()
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="devicelab-load-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    http = bool(target.api_url)
    try:
        if not target.dsn:
            accounts = target.accounts or min(max(options.users), DEFAULT_ACCOUNTS)
            identities = generated_identities(accounts)
            db = Database(None, "", target.no_dsn_note, None)
            _started(progress, target, options, started_at, identities)
            for users in options.users:
                run_step(db, target, options, weights, identities, users, work, run_start,
                         progress)  # fmt: skip
        else:
            with connect(target.dsn, autocommit=True) as conn:
                # The schema is read first (read only): on a database without one, the
                # refusal would only send the user to --allow-writes and a second error.
                identities, db = _database(conn, target, options, emails=http)
                refuse_writes(options, weights)
                _started(progress, target, options, started_at, identities)
                try:
                    for users in options.users:
                        run_step(db, target, options, weights, identities, users, work,
                                 run_start, progress)  # fmt: skip
                finally:
                    if db.conn is not conn:
                        db.conn.close()
    finally:
        if own_dir:
            # A load process that failed keeps its log (the error's hint names it); the
            # specs (a DSN may carry a password) and the results go.
            keep = sys.exc_info()[0] is ProbeFailed
            for path in work.iterdir():
                if not (keep and path.suffix == ".log"):
                    path.unlink()
            if not keep:
                work.rmdir()
    steps = list(progress.steps)
    return LoadRun(
        target=target.label,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        options=options,
        identities=len(identities),
        steps=steps,
        notes=progress.notes,
    )


def _started(
    progress: LoadProgress,
    target: LoadTarget,
    options: LoadOptions,
    started_at: datetime,
    identities: list[Identity],
) -> None:
    """Fill ``progress`` with what the run is, once its users are known (the notes too:
    a run that stops early says them as well)."""
    notes = [target.no_dsn_note] if not target.dsn and target.no_dsn_note else []
    if target.dsn and len(identities) < max(options.users):
        notes.append(
            f"the database has {len(identities)} users in conversations: the "
            f"{max(options.users)} simulated users share them (generate more with datagen"
            " --users for one app user each)"
        )
    progress.target, progress.started_at, progress.options = target.label, started_at, options
    progress.identities, progress.notes, progress.steps = len(identities), notes, []


def _database(
    conn: Any, target: LoadTarget, options: LoadOptions, *, emails: bool
) -> tuple[list[Identity], Database]:
    import psycopg

    from backend_checks.seed import check_app_access

    try:
        if not emails:
            # The simulated users speak SQL as `authenticated`: a role that may not become
            # it measured a minute of refusals and called them "not supported".
            check_app_access(conn)
        identities = fetch_identities(conn, max(options.users), emails=emails)
    except psycopg.Error as exc:
        raise BadInput(
            f"cannot read the messaging schema: {redact(str(exc).splitlines()[0], target.dsn)}",
            hint="install it: devicelab backend datagen --dsn DSN --messages 100000"
            " --allow-writes (a scratch database)",
        ) from None
    try:
        schema, note = dbstats.ensure_statements(conn, allow_writes=options.allow_writes)
    except psycopg.Error as exc:
        # The statement statistics are evidence, not the load: the run goes on without.
        reason = redact(first_line(exc), target.dsn)
        schema, note = "", f"statement statistics are not available ({reason})"
    return identities, Database(conn, schema, note, local_server(conn))
