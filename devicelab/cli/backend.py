"""``devicelab backend``: the story's database checks, the data generator, the managed server.

    backend check   [--dsn DSN] [--out DIR] [--allow-writes]
    backend datagen [--dsn DSN] --messages N [--users U] [--conversations C] [--seed S]
                    --allow-writes [--force]
    backend stop

With no ``--dsn`` the commands use the PostgreSQL cluster devicelab manages itself
(``backend_checks.managed``). The work is in ``backend_checks``; handlers only parse,
call and print. psycopg loads inside the handlers, never at import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from devicelab.cli.load import register_load
from devicelab.cli.options import nonblank_dsn
from devicelab.cli.serve import register_serve
from devicelab.errors import BadInput

if TYPE_CHECKING:
    from devicelab.models import Results

__all__ = ["register"]

#: The realtime check's ceiling (backend_checks.api_checks.MAX_SUBSCRIBERS); not imported
#: from there: this module loads without backend_checks (psycopg, aiohttp) at import.
MAX_SUBSCRIBERS = 10_000
_DSN_HELP = "PostgreSQL DSN (URL or key=value); default: the managed local cluster"
_DSN_OPTION = typer.Option("--dsn", help=_DSN_HELP, callback=nonblank_dsn)


def register(app: typer.Typer) -> None:
    """Add the ``backend`` group: check, datagen, load, serve, stop."""
    backend_app = typer.Typer(
        help="Server-side checks: query plans, indexes, health, load, realtime, storage.",
        rich_markup_mode=None,
    )
    app.add_typer(backend_app, name="backend")

    @backend_app.command("check")
    def check(
        dsn: Annotated[str | None, _DSN_OPTION] = None,
        out_text: Annotated[
            str, typer.Option("--out", help="folder for results.json and reports")
        ] = "devicelab-backend",
        allow_writes: Annotated[
            bool,
            typer.Option(
                "--allow-writes",
                help="seed an empty --dsn database; prove GIN suggestions by a rolled-back build",
            ),
        ] = False,
        runs: Annotated[
            int | None, typer.Option("--runs", min=1, max=10_000, help="timed runs per query")
        ] = None,
        supabase_url: Annotated[
            str | None,
            typer.Option(
                "--supabase-url",
                "--url",  # `backend load`'s spelling, so either works on both commands
                envvar="SUPABASE_URL",
                help="a Supabase project's API URL (https://<ref>.supabase.co); the SQL checks"
                " run on --dsn, skipped without it",
            ),
        ] = None,
        anon_key: Annotated[
            str | None,
            typer.Option("--anon-key", envvar="SUPABASE_ANON_KEY", help="its anon key"),
        ] = None,
        email: Annotated[
            str | None,
            typer.Option("--test-email", envvar="DEVICELAB_TEST_EMAIL", help="a test user"),
        ] = None,
        password: Annotated[
            str | None,
            typer.Option("--test-password", envvar="DEVICELAB_TEST_PASSWORD", help="its password"),
        ] = None,
        plan: Annotated[
            str | None,
            typer.Option("--plan", help="your Realtime plan: free, pro-spend-cap or pro"),
        ] = None,
        subscribers: Annotated[
            int,
            typer.Option(
                "--subscribers",
                min=1,
                max=MAX_SUBSCRIBERS,
                help=f"realtime subscribers, 1 to {MAX_SUBSCRIBERS:,} (the story: 100 to 1,000;"
                " --plan may allow fewer)",
            ),
        ] = 100,
        load: Annotated[
            str | None,
            typer.Option("--load", help="also run 100 and 1000 users this long each, e.g. 30s"),
        ] = None,
    ) -> None:
        """Run the query suite, plans, health, realtime and storage checks; exit 1 on a fail."""
        from backend_checks.api_checks import api_options
        from backend_checks.check import CheckOptions, run_check
        from devicelab.cli.options import out_folder, parse_window
        from devicelab.records import check_writable

        out = out_folder(out_text)
        check_writable(out, make=False)  # a bad --out is known before the run, not after
        api = api_options(supabase_url, anon_key, email, password, plan, subscribers)
        load_s = parse_window(load, "--load")
        options = CheckOptions(allow_writes=allow_writes, runs=runs, api=api, load_s=load_s)
        with _claimed(out) as claim_to_write:
            results = run_check(dsn, options)
            with claim_to_write():
                written = _write(results, out)
        for item in results.checks:
            typer.echo(f"{item.status.upper():5} {item.id:22} {_value(item)}  {item.reason}")
        typer.echo(f"results: {written}")
        raise typer.Exit(results.exit_code())

    @backend_app.command("datagen")
    def datagen(
        # The upper bounds are DatagenParams' (shown in --help; a test keeps them equal),
        # written here as numbers: this module loads without backend_checks at import.
        messages: Annotated[
            int, typer.Option("--messages", min=0, max=100_000_000, help="messages to generate")
        ],
        dsn: Annotated[str | None, _DSN_OPTION] = None,
        users: Annotated[int, typer.Option("--users", min=2, max=10_000_000)] = 1000,
        conversations: Annotated[
            int, typer.Option("--conversations", min=1, max=10_000_000)
        ] = 10000,
        seed: Annotated[
            int, typer.Option("--seed", min=0, max=999_999, help="same seed, same data")
        ] = 1,
        unread: Annotated[
            float,
            typer.Option(
                "--unread",
                min=0,
                max=1_000_000,
                help="read receipts: mean unread messages per conversation and participant"
                " (every older message has its receipt; 0: all read)",
            ),
        ] = 10,
        group_fraction: Annotated[
            float, typer.Option("--group-fraction", min=0, max=1, help="share of group chats")
        ] = 0.10,
        skew: Annotated[
            float,
            typer.Option(
                "--skew", min=1, max=100, help="messages per conversation ~ u**skew (1: even)"
            ),
        ] = 3.0,
        days: Annotated[
            int, typer.Option("--days", min=1, max=36_500, help="the span of message timestamps")
        ] = 90,
        allow_writes: Annotated[
            bool, typer.Option("--allow-writes", help="required: it writes")
        ] = False,
        force: Annotated[
            bool, typer.Option("--force", help="replace tables holding rows we did not generate")
        ] = False,
    ) -> None:
        """Create the reference schema and a deterministic, skewed data set (all or nothing)."""
        from backend_checks.datagen import DatagenParams, run_datagen

        params = DatagenParams.from_options(
            messages=messages,
            users=users,
            conversations=conversations,
            seed=seed,
            unread=unread,
            group_fraction=group_fraction,
            skew=skew,
            days=days,
        )
        report = run_datagen(dsn, params, allow_writes=allow_writes, force=force, say=typer.echo)
        counts = ", ".join(f"{k} {v:,}" for k, v in report.counts.items())
        typer.echo(
            f"generated {counts} in {report.seconds:.2f} s "
            f"({report.messages_per_s():,.0f} messages/s)"
        )

    @backend_app.command("stop")
    def stop() -> None:
        """Stop the managed PostgreSQL cluster (if it runs)."""
        from backend_checks.managed import ManagedPostgres

        cluster = ManagedPostgres()
        typer.echo(
            f"stopped {cluster.data}" if cluster.stop() else "managed PostgreSQL is not running"
        )

    register_load(backend_app)
    register_serve(backend_app)


@contextlib.contextmanager
def _claimed(out: Path) -> Iterator[Callable[[], AbstractContextManager[None]]]:
    """Hold ``out`` as a run does (records.claim_out), so a run or another check writing
    there is refused rather than mixed with ours. An existing folder is held for the
    whole check, refused before it connects; one that does not exist yet is not made
    before the check has results (a failed check creates nothing), and is made and held
    only while they are written. Yields what to enter around the writing."""
    from devicelab.records import claim_out

    if out.is_dir():
        with claim_out(out):
            yield contextlib.nullcontext
        return

    @contextlib.contextmanager
    def claim_new() -> Iterator[None]:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"{out}: cannot make the folder ({exc.strerror})",
                           hint="give --out a folder you may write to") from exc  # fmt: skip
        with claim_out(out):
            yield

    yield claim_new


def _write(results: Results, out: Path) -> Path:
    """Write results.json and the reports into ``out``; returns the path of results.json.

    Raises ConfigError (a bad targets file), BadInput (``out`` cannot be written) or
    EnvironmentProblem (a full disk), as load_targets and write_all do.
    """
    from devicelab.config import load_targets
    from devicelab.report import write_all

    # With the target book, as `devicelab report` would: the matrix shows each target.
    return write_all(results, out, load_targets())["json"]


def _value(check: object) -> str:
    from devicelab.numbers import fmt_value

    # The reports' own digits and units ("1 problem", "45.7%"), not a second format.
    value, unit = getattr(check, "value", None), getattr(check, "unit", "")
    return "-" if value is None else fmt_value(value, unit)
