"""``devicelab backend load``: the story's concurrent users against the messaging backend.

Thin: declare the options, parse them into a LoadRequest, run its job
(``backend_checks.load.job``: target, run, judge, write) and print. Locust runs in
subprocesses; nothing here imports it (or psycopg) at module scope. The API key and the
users' password are never printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

# Re-exported: the other commands and the tests took the parsers from here.
from devicelab.cli.options import (
    nonblank_dsn,
    out_folder,
    parse_duration,
    parse_mix,
    parse_users,
    parse_window,
)

if TYPE_CHECKING:
    from backend_checks.load import LoadRun
    from devicelab.models import Results

__all__ = ["nonblank_dsn", "out_folder", "parse_duration", "parse_users", "register_load"]

_HELP = """Run 100 then 1000 concurrent app users (Locust) and judge "supported".

The users speak SQL to PostgreSQL as PostgREST would (--dsn, or the managed cluster),
or HTTP to a Supabase API as supabase-js does (--url with --anon-key, or SUPABASE_URL
and SUPABASE_ANON_KEY; --reference starts our reference server over the managed
cluster). --import judges the merged results of Locust masters (one file per step).
"""


def register_load(backend_app: typer.Typer) -> None:
    """Add the ``load`` command to the ``backend`` group."""

    @backend_app.command("load", help=_HELP)
    def load_command(
        ctx: typer.Context,
        # None when not given (--import refuses a --users given); the default as Click
        # shows one, written out.
        users: Annotated[
            str | None, typer.Option(help="users per step, e.g. 100,1000  [default: 100,1000]")
        ] = None,
        dsn: Annotated[
            str | None,
            typer.Option(
                help="PostgreSQL DSN (default: the managed cluster); with --url: "
                "the API's database, for identities, statistics and CPU",
                callback=nonblank_dsn,
            ),
        ] = None,
        url: Annotated[
            str | None,
            typer.Option(
                "--url",
                "--supabase-url",  # `backend check`'s spelling, so either works on both
                envvar="SUPABASE_URL",
                show_envvar=True,
                help="HTTP load: the project's base URL (https://<ref>.supabase.co), without"
                " /rest/v1 or /auth/v1",
            ),
        ] = None,
        anon_key: Annotated[
            str | None,
            typer.Option(
                envvar="SUPABASE_ANON_KEY",
                show_envvar=True,
                help="the API's anon key (never printed)",
            ),
        ] = None,
        test_password: Annotated[
            str | None,
            typer.Option(
                envvar="DEVICELAB_TEST_PASSWORD",
                help="password of the generated users (default: the story's)",
            ),
        ] = None,
        accounts: Annotated[
            int | None,
            typer.Option(
                min=1, help="HTTP without --dsn: sign in testuser1..N (default: one per user)"
            ),
        ] = None,
        reference: Annotated[
            bool,
            typer.Option(
                "--reference",
                help="HTTP load on our reference server, started "
                "over the managed cluster (or --dsn) for the run",
            ),
        ] = False,
        imports: Annotated[
            list[Path] | None,
            typer.Option(
                "--import",
                help="judge a Locust master's merged result (DEVICELAB_LOAD_OUT); once per step",
            ),
        ] = None,
        duration: Annotated[
            str | None, typer.Option(help="measurement window per step [default: 60s]")
        ] = None,
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
            int | None,
            typer.Option(min=1, max=256, help="load processes (default: one per 500 users)"),
        ] = None,
        allow_writes: Annotated[
            bool, typer.Option("--allow-writes", help="let the full mix write to --dsn / --url")
        ] = False,
        out_text: Annotated[
            str | None, typer.Option("--out", help="write results.json and the reports here")
        ] = None,
    ) -> None:
        from backend_checks.load.job import LoadRequest

        # Parsed in the order the options were always checked: one bad option, one message.
        out = None if out_text is None else out_folder(out_text)
        # SUPABASE_URL yields to another target named on the command line; only Click's
        # parameter source tells a --url typed from one read from the environment.
        source = ctx.get_parameter_source("url")
        request = LoadRequest(
            mix=parse_mix(mix),
            users=None if users is None else parse_users(users),
            duration_s=parse_window(duration),
            closed=closed,
            rate=rate,
            per_user_rate=per_user_rate,
            processes=processes,
            allow_writes=allow_writes,
            dsn=dsn,
            url=url,
            url_from_env=source is not None and source.name == "ENVIRONMENT",
            anon_key=anon_key,
            test_password=test_password,
            accounts=accounts,
            reference=reference,
            imports=imports or [],
            out=out,
        )
        outcome = request.prepare().run(say=lambda line: typer.echo(line, err=True))
        _print(outcome.run, outcome.results)
        if out is not None:
            typer.echo(f"wrote {out}/results.json")
        raise typer.Exit(outcome.results.exit_code())


def _print(run: LoadRun, results: Results) -> None:
    typer.echo(f"target: {run.target}")
    for step in run.steps:
        via = "HTTP" if step.transport == "rest" else "SQL"
        api = f", API server CPU {step.cpu.api_mean_pct} %" if step.cpu.api_mean_pct else ""
        # None: the database is not on this machine (an HTTP target, a remote DSN).
        db_cpu = "n/a" if step.cpu.mean_pct is None else f"{step.cpu.mean_pct} %"
        typer.echo(
            f"{step.users} users ({via}, {step.mode}, {step.processes} process(es)): "
            f"{step.total.throughput_per_s:g} ops/s, {step.total.errors} errors, "
            f"exhaustion {step.exhaustion}, DB CPU {db_cpu}{api}"
        )
        for name, op in step.ops.items():
            # The latencies are of the successful requests only: say how many they are.
            counts = f"n={op.count - op.errors} ok, {op.errors} failed"
            typer.echo(
                f"  {name:<18} {counts:<22} p50={op.p50_ms:<9g} p95={op.p95_ms:<9g} "
                f"p99={op.p99_ms:<9g} max={op.max_ms:<9g} ms"
            )
        for key, count in sorted(step.errors.items(), key=lambda kv: -kv[1])[:5]:
            typer.echo(f"  error x{count}: {key}")
    for note in run.notes:
        typer.echo(f"note: {note}")
    for check in results.checks:
        typer.echo(f"{check.id}: {check.status} ({check.reason})")
