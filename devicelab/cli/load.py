"""``devicelab backend load``: the story's concurrent users against the messaging backend.

Thin: parse the options, pick the target (SQL on a DSN or the managed cluster; HTTP on a
Supabase URL or on our reference server; or results of Locust masters to import), run,
judge, print, write. Locust runs in subprocesses; nothing here imports it (or psycopg)
at module scope. The API key and the users' password are never printed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from devicelab.errors import BadInput, DeviceLabError

if TYPE_CHECKING:
    from backend_checks.backend_info import BackendKind
    from backend_checks.load import LoadOptions, LoadRun
    from backend_checks.load.runner import LoadProgress
    from devicelab.models import Results, TargetBook

__all__ = ["nonblank_dsn", "parse_duration", "parse_users", "register_load"]

#: The shortest measurement window a step may have (a 1 ms window judged 0 requests).
MIN_WINDOW_S = 1.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_HELP = """Run 100 then 1000 concurrent app users (Locust) and judge "supported".

The users speak SQL to PostgreSQL as PostgREST would (--dsn, or the managed cluster),
or HTTP to a Supabase API as supabase-js does (--url with --anon-key, or SUPABASE_URL
and SUPABASE_ANON_KEY; --reference starts our reference server over the managed
cluster). --import judges the merged results of Locust masters (one file per step).
"""


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


def nonblank_dsn(value: str | None) -> str | None:
    """The ``--dsn`` callback of every backend command: an empty DSN is refused rather than
    read as libpq's defaults (or, by the load, as "no database")."""
    if value is not None and not value.strip():
        raise BadInput(
            "--dsn is empty",
            hint="give a DSN such as postgresql://user@host:5432/db, or leave --dsn out"
            " for the managed cluster",
        )
    return value


def out_folder(text: str) -> Path:
    """The ``--out`` folder of a command. Raises BadInput for an empty one (it read as the
    current folder, and the reports landed among the user's files)."""
    if not text.strip():
        raise BadInput("--out is empty", hint="name a folder, e.g. --out devicelab-out")
    return Path(text)


def parse_users(text: str) -> list[int]:
    """The user counts of the steps in ``text`` ("100,1000"). Raises BadInput."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        steps = []
    if not steps or any(n < 1 for n in steps):
        raise BadInput(f"bad --users {text!r}", hint="a comma-separated list, e.g. 100,1000")
    if len(set(steps)) < len(steps):
        raise BadInput(f"bad --users {text!r}: a step given twice", hint="e.g. 100,1000")
    return steps


def register_load(backend_app: typer.Typer) -> None:
    """Add the ``load`` command to the ``backend`` group."""

    @backend_app.command("load", help=_HELP)
    def load_command(
        ctx: typer.Context,
        users: Annotated[str, typer.Option(help="users per step, e.g. 100,1000")] = "100,1000",
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
            int | None, typer.Option(help="load processes (default: one per 500 users)")
        ] = None,
        allow_writes: Annotated[
            bool, typer.Option("--allow-writes", help="let the full mix write to --dsn / --url")
        ] = False,
        out_text: Annotated[
            str | None, typer.Option("--out", help="write results.json and the reports here")
        ] = None,
    ) -> None:
        from backend_checks.load.verdict import to_results
        from devicelab import config

        out = None if out_text is None else out_folder(out_text)
        if mix not in ("full", "read"):
            raise BadInput(f"bad --mix {mix!r}", hint="full or read")
        # SUPABASE_URL from the environment applies only when no other target is named.
        source = ctx.get_parameter_source("url")
        env_url = source is not None and source.name == "ENVIRONMENT"
        if url is not None and env_url and (dsn is not None or reference or imports):
            url = None
        options = _options(
            users, duration, mix, closed, rate, per_user_rate, processes, allow_writes
        )
        if url is not None and not (reference or imports):
            from backend_checks.load.api import check_url

            check_url(url)  # malformed: bad input before anything is made or asked
        # Bad input found now, not after minutes of load: the targets (DEVICELAB_HOME and
        # its files) and the output folder.
        targets = config.load_targets()
        if out is not None:
            from devicelab.records import check_writable

            check_writable(out)
        _show_progress()
        from backend_checks.load.runner import LoadProgress

        progress = LoadProgress()
        kind: BackendKind = "reference" if reference else "postgres"
        if imports:
            run, kind = _imported(ctx, imports, duration, options, url, reference, dsn)
        elif reference or url is not None:
            kind = "reference" if reference else "supabase"
            with _unfinished_written(progress, out, targets, kind):
                run = _http(url, anon_key, test_password, accounts, reference, dsn, options,
                            progress)  # fmt: skip
        else:
            from backend_checks.load import run_load

            with _unfinished_written(progress, out, targets, kind):
                target, writes = _target(dsn, options)
                run = run_load(target, writes, progress=progress)
        results = to_results(run, targets, backend_kind=kind)
        if out is not None:  # written first: a closed stdout must not lose minutes of load
            from devicelab import report

            report.write_all(results, out, targets)
        _print(run, results)
        if out is not None:
            typer.echo(f"wrote {out}/results.json")
        raise typer.Exit(results.exit_code())


def _options(
    users: str,
    duration: str | None,
    mix: str,
    closed: bool,
    rate: float | None,
    per_user_rate: float,
    processes: int | None,
    allow_writes: bool,
) -> LoadOptions:
    """LoadOptions from the command line. Raises BadInput naming the bad option."""
    from pydantic import ValidationError

    from backend_checks.load import LoadOptions

    steps = parse_users(users)
    seconds = parse_duration("60s" if duration is None else duration)
    if seconds < MIN_WINDOW_S:
        raise BadInput(
            f"--duration {duration}: a step's window is {MIN_WINDOW_S:g} s at least",
            hint="the verdict needs requests to judge: e.g. --duration 30s",
        )
    if closed and rate is not None:
        raise BadInput("--closed sends back to back: --rate does not apply", hint="drop one")
    try:
        return LoadOptions(
            users=steps,
            duration_s=seconds,
            mix=mix,  # checked by the caller
            closed=closed,
            rate=rate,
            per_user_rate=per_user_rate,
            processes=processes,
            allow_writes=allow_writes,
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"]).replace("_", "-")
        raise BadInput(f"bad --{field}: {problem['msg']}", hint="see --help") from None


def _imported(
    ctx: typer.Context,
    imports: list[Path],
    duration: str | None,
    options: LoadOptions,
    url: str | None,
    reference: bool,
    dsn: str | None,
) -> tuple[LoadRun, BackendKind]:
    """The run of Locust masters' files, and what it talked to. Raises BadInput."""
    from backend_checks.load.imported import import_results

    given = ctx.get_parameter_source("users")
    users_given = given is not None and given.name == "COMMANDLINE"
    if url is not None or reference or dsn is not None or users_given:
        raise BadInput(
            "--import judges runs that are over: drop --url, --reference, --dsn"
            " and --users (the files say how many users ran)",
            hint="devicelab backend load --import merged.json --out DIR",
        )
    seconds = parse_duration(duration) if duration else None
    run = import_results(list(imports), duration_s=seconds, options=options)
    return run, "supabase" if run.steps[0].transport == "rest" else "postgres"


@contextlib.contextmanager
def _unfinished_written(
    progress: LoadProgress, out: Path | None, targets: TargetBook, kind: BackendKind
) -> Iterator[None]:
    """When the run stops early (its server went away, Ctrl-C, SIGTERM), what it measured
    until then goes to ``out``, marked unfinished; the error stays the command's outcome
    (exit 3, 130, 143)."""
    try:
        yield
    except (DeviceLabError, KeyboardInterrupt):
        if out is not None:
            _write_unfinished(progress, out, targets, kind)
        raise


def _http(
    url: str | None,
    anon_key: str | None,
    password: str | None,
    accounts: int | None,
    reference: bool,
    dsn: str | None,
    options: LoadOptions,
    progress: LoadProgress,
) -> LoadRun:
    """The HTTP load: on the reference server, or on the API at ``url``."""
    from backend_checks.load.api import (
        DEFAULT_PASSWORD,
        RestApi,
        run_reference_load,
        run_rest_load,
    )

    if reference:
        if url is not None:
            raise BadInput("--reference serves its own API: drop --url", hint="one target")
        return run_reference_load(options, dsn=dsn, progress=progress)
    assert url is not None
    if accounts is not None and dsn is not None:
        raise BadInput("--accounts is for --url without --dsn", hint="drop one of them")
    if not anon_key:
        raise BadInput(
            "--url needs the API's anon key", hint="give --anon-key or SUPABASE_ANON_KEY"
        )
    api = RestApi(
        url=url, anon_key=anon_key, password=password or DEFAULT_PASSWORD, accounts=accounts
    )
    return run_rest_load(api, options, dsn=dsn, progress=progress)


def _write_unfinished(
    progress: LoadProgress, out: Path, targets: TargetBook, kind: BackendKind
) -> None:
    """Write what a run that stopped early measured to ``out`` (results.json with
    ``finished_at`` null, and the reports), as ``devicelab run`` does for a stopped run.
    Nothing when the run had not started; never raises (the stop is what counts)."""
    from backend_checks.load.verdict import to_results
    from devicelab import report
    from devicelab.models import Results

    run = progress.run()
    if run is None:
        return
    try:
        results = to_results(run, targets, backend_kind=kind)
        if not run.steps:  # no step measured: no verdict, not "skipped: no step ran"
            results = Results(run=results.run)
        results = Results(
            run=results.run.model_copy(update={"finished_at": None}),
            checks=results.checks,
            series=results.series,
        )
        report.write_all(results, out, targets)
        typer.echo(f"wrote {out}/results.json (unfinished)", err=True)
    except Exception as exc:  # the reason the run stopped is the error to report
        typer.echo(f"devicelab: could not write {out}: {exc}", err=True)


def _target(dsn: str | None, options: LoadOptions) -> tuple[str, LoadOptions]:
    """The DSN to load and the options to load it with: the managed cluster is devicelab's
    own scratch database, and so is one holding only a `backend datagen` data set, so the
    full mix may write there without the flag. Raises UnsafeActionRefused when the role
    cannot tell whether the data is ours and the mix writes (load.runner.scratch_writes)."""
    if dsn is not None:
        from backend_checks.check_load import connection_room
        from backend_checks.load.runner import scratch_writes

        writes = scratch_writes(dsn, options)
        room = connection_room(dsn)
        free = room["free"] if room is not None else None
        for users in options.users:
            if free is not None and users > free:
                # Said before the sessions open (a hosted database's direct-connection
                # cap): the step will meet the limit; exhaustion is measured and judged.
                typer.echo(
                    f"devicelab: warning: {users} SQL sessions exceed the {free} connections"
                    " the server has free for this role; the step will meet its limit"
                    " (load through the API instead: --url)",
                    err=True,
                )
        return dsn, writes
    from backend_checks.reference.serve import prepare_database

    # Seeded with the story's data set when empty, as `backend check` and `run` seed it.
    dsn = prepare_database(None, say=lambda line: typer.echo(line, err=True))
    return dsn, options.model_copy(update={"allow_writes": True})


def _show_progress() -> None:
    """Each step's start and end on stderr as they happen: a run is minutes long, and a
    Ctrl-C in its last step should not leave the finished ones unseen."""
    import logging
    import sys

    progress = logging.getLogger("backend_checks.load.runner")
    if not progress.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("load: %(message)s"))
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)


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
