"""``devicelab backend load``: the story's concurrent users against the messaging database.

Thin: parse the options, run :func:`backend_checks.load.run_load`, judge, print, write.
Locust runs in subprocesses; nothing here imports it (or psycopg) at module scope.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from devicelab.errors import BadInput

if TYPE_CHECKING:
    from backend_checks.load import LoadRun
    from devicelab.models import Results

__all__ = ["parse_duration", "parse_users", "register_load"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` ("60s", "2m", "90", "1.5h"). Raises BadInput."""
    match = _DURATION.match(text)
    if not match:
        raise BadInput(f"bad duration {text!r}", hint="use e.g. 60s, 2m or 90")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    seconds = float(match.group(1)) * scale
    if seconds <= 0:
        raise BadInput(f"bad duration {text!r}: must be positive", hint="use e.g. 60s")
    return seconds


def parse_users(text: str) -> list[int]:
    """The user counts of the steps in ``text`` ("100,1000"). Raises BadInput."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        steps = []
    if not steps or any(n < 1 for n in steps):
        raise BadInput(f"bad --users {text!r}", hint="a comma-separated list, e.g. 100,1000")
    return steps


def register_load(backend_app: typer.Typer) -> None:
    """Add the ``load`` command to the ``backend`` group."""

    @backend_app.command("load")
    def load_command(
        users: Annotated[str, typer.Option(help="users per step, e.g. 100,1000")] = "100,1000",
        dsn: Annotated[
            str | None, typer.Option(help="PostgreSQL DSN (default: the managed cluster)")
        ] = None,
        duration: Annotated[str, typer.Option(help="measurement window per step")] = "60s",
        rate: Annotated[
            float | None, typer.Option(help="total ops/s of a step (fixed-rate mode)")
        ] = None,
        per_user_rate: Annotated[
            float, typer.Option(help="ops/s per user when --rate is not given")
        ] = 0.2,
        closed: Annotated[
            bool, typer.Option("--closed", help="closed loop: users send back to back")
        ] = False,
        mix: Annotated[str, typer.Option(help="full (reads and writes) or read")] = "full",
        processes: Annotated[
            int | None, typer.Option(help="load processes (default: one per 500 users)")
        ] = None,
        allow_writes: Annotated[
            bool, typer.Option("--allow-writes", help="let the full mix write to --dsn")
        ] = False,
        out: Annotated[
            Path | None, typer.Option(help="write results.json and the reports here")
        ] = None,
    ) -> None:
        """Run 100 then 1000 concurrent app users (Locust) and judge "supported"."""
        from backend_checks.load import LoadOptions, run_load
        from backend_checks.load.verdict import to_results
        from devicelab import config

        if mix not in ("full", "read"):
            raise BadInput(f"bad --mix {mix!r}", hint="full or read")
        steps, seconds = parse_users(users), parse_duration(duration)
        from pydantic import ValidationError

        target, writes_ok = _target(dsn, allow_writes)
        try:
            options = LoadOptions(
                users=steps,
                duration_s=seconds,
                mix=mix,  # checked above
                closed=closed,
                rate=rate,
                per_user_rate=per_user_rate,
                processes=processes,
                allow_writes=writes_ok,
            )
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(str(p) for p in problem["loc"]).replace("_", "-")
            raise BadInput(f"bad --{field}: {problem['msg']}", hint="see --help") from None
        run = run_load(target, options)
        results = to_results(run, config.load_targets())
        _print(run, results)
        if out is not None:
            from devicelab import report

            report.write_all(results, out, config.load_targets())
            typer.echo(f"wrote {out}/results.json")
        raise typer.Exit(results.exit_code())


def _target(dsn: str | None, allow_writes: bool) -> tuple[str, bool]:
    """The DSN to load and whether writes are allowed: the managed cluster is devicelab's
    own scratch database, so the full mix may write there without the flag."""
    if dsn is not None:
        return dsn, allow_writes
    from backend_checks.managed import ManagedPostgres

    return ManagedPostgres().ensure(), True


def _print(run: LoadRun, results: Results) -> None:
    for step in run.steps:
        typer.echo(
            f"{step.users} users ({step.mode}, {step.processes} process(es)): "
            f"{step.total.throughput_per_s:g} ops/s, {step.total.errors} errors, "
            f"exhaustion {step.exhaustion}, DB CPU {step.cpu.mean_pct} %"
        )
        for name, op in step.ops.items():
            typer.echo(
                f"  {name:<18} n={op.count:<7} p50={op.p50_ms:<9g} p95={op.p95_ms:<9g} "
                f"p99={op.p99_ms:<9g} max={op.max_ms:<9g} ms  errors={op.errors}"
            )
    for check in results.checks:
        typer.echo(f"{check.id}: {check.status} ({check.reason})")
