"""Judge load steps run elsewhere: the merged results of Locust masters.

Locust's master/worker mode (``distributed.py``) writes one ``WorkerResult`` JSON per run
(``DEVICELAB_LOAD_OUT``): the merged HDR histograms, counts, errors and the run's shape.
:func:`import_results` turns one such file per step into a :class:`LoadRun`, judged as a
local run is (``load_checks``). What the master cannot know is said, not guessed: the
database CPU and the pg_stat_statements / pg_stat_user_tables deltas were not taken, so
the CPU criterion is not judged and the evidence says why.

A file written before the master recorded the shape has none: the window must be given
(``duration_s``: the spec's ``duration_s``, after which every user stopped) and the pace
is taken from ``options`` (``--closed``, ``--rate``, ``--per-user-rate``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from backend_checks.load.merge import merge_step
from backend_checks.load.mix import operation
from backend_checks.load.models import CpuReport, StatsDelta, StepResult, WorkerResult
from backend_checks.load.runner import LoadOptions, LoadRun
from devicelab.errors import BadInput

__all__ = ["CPU_NOTE", "DELTAS_NOTE", "import_results", "read_result"]

CPU_NOTE = (
    "imported from a Locust master's result: database CPU was not measured (not judged); "
    "read the server's CPU for the window"
)
DELTAS_NOTE = (
    "imported from a Locust master's result: pg_stat_statements / pg_stat_user_tables "
    "deltas were not taken; snapshot them around the run yourself"
)


def read_result(path: Path) -> WorkerResult:
    """The WorkerResult in ``path``. Raises BadInput (missing, not JSON, not a result)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(
            f"cannot read {path}: {exc.strerror}", hint="give the DEVICELAB_LOAD_OUT file"
        ) from None
    try:
        return WorkerResult.model_validate_json(text)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "file"
        raise BadInput(
            f"{path} is not a Locust master's load result ({where}: {problem['msg']})",
            hint="give the JSON a master wrote to DEVICELAB_LOAD_OUT",
        ) from None


def _mix(path: Path, result: WorkerResult) -> dict[str, int]:
    names = list(result.shape.mix) if result.shape is not None else list(result.ops)
    try:
        weights = {name: operation(name).weight for name in names}
    except KeyError as exc:
        raise BadInput(
            f"{path}: unknown operation {exc}", hint="see backend_checks/load/mix.py"
        ) from None
    return dict(result.shape.mix) if result.shape is not None else weights


def _parse_time(text: str, fallback: datetime) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return fallback
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def import_results(
    paths: list[Path], *, duration_s: float | None = None, options: LoadOptions | None = None
) -> LoadRun:
    """One LoadRun from one master result per step (any order; sorted by users).

    ``duration_s`` and ``options`` describe files that carry no shape. Raises BadInput
    (unreadable file, no window known, two files of the same user count).
    """
    if not paths:
        raise BadInput("nothing to import", hint="give --import FILE once per step")
    pace = options or LoadOptions()
    loaded = sorted(((p, read_result(p)) for p in paths), key=lambda item: item[1].users)
    seen: set[int] = set()
    steps: list[StepResult] = []
    starts: list[datetime] = []
    ends: list[datetime] = []
    targets: list[str] = []
    identities = 0
    offset = 0.0
    for path, result in loaded:
        if result.users < 1:
            raise BadInput(f"{path}: the run had no users (-u)", hint="give a run with -u N")
        if result.users in seen:
            raise BadInput(f"two results for {result.users} users", hint="give one file per step")
        seen.add(result.users)
        shape = result.shape
        window = shape.duration_s if shape else duration_s
        if window is None:
            raise BadInput(
                f"{path} does not say how long its window was",
                hint="give --duration: the spec's duration_s of that run",
            )
        rate_per_user = shape.rate_per_user if shape else pace.rate_per_user(result.users)
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        started = _parse_time(shape.started_at, mtime) if shape else mtime
        starts.append(started)
        ends.append(_parse_time(shape.finished_at, mtime) if shape else mtime)
        if shape and shape.target:
            targets.append(shape.target)
        identities = max(identities, shape.identities if shape else 0)
        steps.append(
            merge_step(
                [result],
                users=result.users,
                processes=shape.workers if shape else 0,
                mix=_mix(path, result),
                mode="closed" if rate_per_user is None else "fixed-rate",
                rate_per_s=None if rate_per_user is None else rate_per_user * result.users,
                duration_s=window,
                window_start=offset,
                cpu=CpuReport(method="none", note=CPU_NOTE),
                deltas=StatsDelta(statements_available=False, statements_note=DELTAS_NOTE),
                transport=result.transport,
                lost_workers=shape.lost_workers if shape else None,
            )
        )
        offset += window
    first = steps[0]
    writes = any(operation(name).writes for step in steps for name in step.mix)
    return LoadRun(
        target=", ".join(dict.fromkeys(targets)) or "imported: " + ", ".join(p.name for p in paths),
        started_at=min(starts),
        finished_at=max(ends),
        options=pace.model_copy(
            update={
                "users": [s.users for s in steps],
                "duration_s": first.duration_s,
                "mix": "full" if writes else "read",
                "closed": first.mode == "closed",
                "allow_writes": writes,
            }
        ),
        identities=identities,
        steps=steps,
        notes=[CPU_NOTE, DELTAS_NOTE],
    )
