"""The ``devicelab`` command line: a thin Typer app, one file per command group.

Every command builds an object, calls it and prints. Errors of the DeviceLabError tree
become one line on stderr and the exit code of DESIGN.md (2 bad input, 3 environment);
nothing here imports mitmproxy, playwright, appium, locust or psycopg at module scope.

stdout and stderr may go away mid-command: the reader of ``devicelab run ... | tee`` dies,
a farm is killed, the terminal is closed (EPIPE, EIO). What is printed then is dropped:
a print never stops a command from restoring what it changed, nor changes its exit code.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any, TextIO

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

#: The exit code after Ctrl-C (128 + SIGINT, as shells report it), after SIGTERM and SIGHUP,
#: and the line that says so.
_INTERRUPTED = 130
_STOPPED_BY: dict[int, tuple[int, str]] = {
    signal.SIGTERM: (143, "devicelab: terminated"),
    signal.SIGHUP: (129, "devicelab: hung up (SIGHUP)"),
}
#: What writing to a reader that went away (EPIPE) or a hung-up terminal (EIO) raises.
_GONE = (errno.EPIPE, errno.EIO)


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


def _print_version(asked: bool) -> None:
    """``devicelab --version``: the release, and the commit when run from a checkout."""
    if asked:
        from devicelab.version import full_version

        typer.echo(f"devicelab {full_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print devicelab's version (with the commit in a checkout) and exit.",
    ),
) -> None:
    """Performance checks of a Capacitor + Supabase messaging app on a device lab."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) the process exit code. SIGTERM and SIGHUP
    stop a command the way Ctrl-C does (devicelab.interrupts), with exit 143 and 129. A
    usage error (an unknown option, a missing or bad value) is one line naming the
    command's --help, exit 2, like every other bad input. A stdout or stderr that went away
    (EPIPE, EIO) drops what is printed to it; the exit code stays the command's. One that
    cannot be written (a full disk, ``> /dev/full``) drops it too, and a command that
    would have exited 0 says so in one line and exits 3: its output is lost."""
    # psycopg's cleanup warnings ("error ignored in rollback of ...") after Ctrl-C or
    # SIGTERM cut a query are noise beside the one line that says the command stopped.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    with _outliving_readers() as streams, sigterm_as_interrupt() as terminated:
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
        code = code if isinstance(code, int) else 0
        if code == 0 and (lost := _lost_output(streams)):
            typer.echo(f"devicelab: error: {lost}", err=True)
            code = 3  # an environment problem: the command's output did not reach anyone
        sys.exit(code)
    return 0


def _lost_output(streams: dict[str, _Outliving]) -> str:
    """The one line saying which stream could not be written, with the fix ("": none)."""
    for name, guard in streams.items():
        if guard.failed is not None:
            why = guard.failed.strerror or str(guard.failed)
            return (f"{name}: cannot write what the command printed ({why}) "
                    "(hint: free some space, or send the output elsewhere)")  # fmt: skip
    return ""


def _stopped(terminated: list[int]) -> None:
    """Say why the command stopped early and exit 130 (Ctrl-C), 143 (SIGTERM) or 129
    (SIGHUP)."""
    if terminated:
        code, said = _STOPPED_BY[terminated[0]]
        typer.echo(said, err=True)
        sys.exit(code)
    typer.echo("devicelab: interrupted", err=True)
    sys.exit(_INTERRUPTED)


class _Outliving:
    """A text stream that forwards to ``stream`` until writing to it fails, then drops what
    it is given: with EPIPE or EIO the reader is gone, nobody can read it; any other error
    (a full disk, ``> /dev/full``) is kept in ``failed`` for main() to say once."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.gone = False
        self.failed: OSError | None = None

    def write(self, text: str) -> int:
        """Write ``text`` (or drop it once writing failed); returns its length."""
        if not self.gone:
            try:
                return self.stream.write(text)
            except OSError as exc:
                self._went(exc)
        return len(text)

    def flush(self) -> None:
        """Flush, unless writing failed before."""
        if not self.gone:
            try:
                self.stream.flush()
            except OSError as exc:
                self._went(exc)

    def _went(self, exc: OSError) -> None:
        if exc.errno not in _GONE:
            self.failed = self.failed or exc
        self.gone = True

    def __getattr__(self, name: str) -> Any:  # encoding, errors, fileno, isatty, ...
        return getattr(self.stream, name)


@contextlib.contextmanager
def _outliving_readers() -> Iterator[dict[str, _Outliving]]:
    """Within the block, sys.stdout and sys.stderr drop what is written once writing to
    them failed (_Outliving); yields them by name. After it, the real ones are back; one
    that failed is pointed at /dev/null first, so the interpreter's last flush of what it
    still holds neither prints "Exception ignored" nor turns the exit code into 120."""
    guards = {  # None (no stdout at all): click's echo already prints nothing
        name: _Outliving(stream)
        for name in ("stdout", "stderr")
        if (stream := getattr(sys, name)) is not None
    }
    for name, guard in guards.items():
        setattr(sys, name, guard)  # a TextIO where it counts: write, flush, encoding
    try:
        yield guards
    finally:
        for name, guard in guards.items():
            setattr(sys, name, guard.stream)
            if guard.gone:
                with contextlib.suppress(OSError, ValueError):  # no fd: nothing to flush
                    fd = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(fd, guard.stream.fileno())
                    os.close(fd)
