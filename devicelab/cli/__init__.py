"""The ``devicelab`` command line: a thin Typer app, one file per command group.

Every command builds an object, calls it and prints. Errors of the DeviceLabError tree
become one line on stderr and the exit code of DESIGN.md (2 bad input, 3 environment);
nothing here imports mitmproxy, playwright, appium, locust or psycopg at module scope.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer

from devicelab.cli import backend, battery, devices, doctor, proxy, report, run
from devicelab.errors import DeviceLabError
from devicelab.interrupts import sigterm_as_interrupt

__all__ = ["app", "main"]

app = typer.Typer(
    name="devicelab",
    help="Performance checks of a Capacitor + Supabase messaging app on a device lab.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: rich's help renderer costs ~0.25 s of imports; `--help` must be fast.
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: The exit code after Ctrl-C (128 + SIGINT, as shells report it), and after SIGTERM.
_INTERRUPTED = 130
_TERMINATED = 143


def _click_error(name: str) -> type[Any]:
    """Click's exception class ``name`` as Typer vendors it. Typer exports only
    BadParameter, a subclass of UsageError and ClickException: found through it."""
    return next(
        (cls for cls in typer.BadParameter.__mro__ if cls.__name__ == name), typer.BadParameter
    )


#: A usage error (unknown option, missing or bad value), and any other Click error.
_USAGE_ERROR = _click_error("UsageError")
_CLICK_ERROR = _click_error("ClickException")

for module in (run, battery, devices, doctor, proxy, backend, report):
    module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) the process exit code. SIGTERM stops a
    command the way Ctrl-C does (devicelab.interrupts), with exit 143. A usage error (an
    unknown option, a missing or bad value) is one line naming the command's --help, exit
    2, like every other bad input."""
    # psycopg's cleanup warnings ("error ignored in rollback of ...") after Ctrl-C or
    # SIGTERM cut a query are noise beside the one line that says the command stopped.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    with sigterm_as_interrupt() as terminated:
        try:
            code = app(args=argv, prog_name="devicelab", standalone_mode=False)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        except _USAGE_ERROR as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help
                exc.show()
            else:
                ctx = getattr(exc, "ctx", None)
                where = ctx.command_path if ctx else "devicelab"
                typer.echo(
                    f"devicelab: error: {exc.format_message()} (hint: see '{where} --help')",
                    err=True,
                )
            code = exc.exit_code
        except _CLICK_ERROR as exc:
            typer.echo(f"devicelab: error: {exc.format_message()}", err=True)
            code = exc.exit_code
        except typer.Abort:  # end of input at a prompt
            code = 1
        except DeviceLabError as exc:
            typer.echo(f"devicelab: error: {exc.one_line()}", err=True)
            code = exc.exit_code
        except KeyboardInterrupt:  # before Typer took over
            code = _INTERRUPTED
        if code == _INTERRUPTED:  # Typer's silent exit for a KeyboardInterrupt
            _stopped(terminated)
        sys.exit(code if isinstance(code, int) else 0)
    return 0


def _stopped(terminated: list[int]) -> None:
    """Say why the command stopped early and exit 130 (Ctrl-C) or 143 (SIGTERM)."""
    if terminated:
        typer.echo("devicelab: terminated", err=True)
        sys.exit(_TERMINATED)
    typer.echo("devicelab: interrupted", err=True)
    sys.exit(_INTERRUPTED)
