"""What every bench shares on its command line: one-line errors, exit codes, verdicts.

Exit codes are devicelab's (DESIGN.md): 0 every goal met, 1 a goal missed, 2 bad input,
3 environment (a server down, a tool missing), 130 interrupted (after cleanup). Errors
print one line, ``bench/<name>.py: error: <message> (hint: ...)``, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from devicelab.errors import (
    BackendUnavailable,
    BadInput,
    DeviceLabError,
    ProbeFailed,
    first_line,
)

SIGTERM_EXIT = 143


class BenchParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (hint: ...)`` and exit 2."""
        print(f"{self.prog}: error: {message} (hint: see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def parser(name: str, description: str | None) -> BenchParser:
    """The argument parser of ``bench/<name>.py``."""
    return BenchParser(prog=f"bench/{name}.py", description=description)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1. Raises ArgumentTypeError."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0. Raises ArgumentTypeError."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def positive_ints(text: str) -> list[int]:
    """argparse type: comma-separated whole numbers >= 1. Raises ArgumentTypeError."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}")
    return [positive_int(part) for part in parts]


def names(text: str) -> list[str]:
    """argparse type: comma-separated non-empty names. Raises ArgumentTypeError."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"not a comma-separated list of names: {text!r}")
    return parts


def dsn(text: str) -> str:
    """argparse type: a libpq connection string or URI (parsed, not connected).

    Raises ArgumentTypeError.
    """
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(text)
    except Exception as exc:  # psycopg.ProgrammingError; its message names the fault
        raise argparse.ArgumentTypeError(f"not a PostgreSQL DSN: {first_line(exc)}") from None
    return text


def verdict(met: bool) -> str:
    """The word every bench prints for a goal: ``meets`` or ``misses`` (as bench/load.py)."""
    return "meets" if met else "misses"


def exit_code(verdicts: list[bool]) -> int:
    """0 when every judged goal is met, 1 when one is missed."""
    return 0 if all(verdicts) else 1


@contextlib.contextmanager
def database_errors(what: str) -> Iterator[None]:
    """Translate psycopg's errors, naming ``what`` was being done: no connection ->
    BackendUnavailable, a server not set up for the bench -> ProbeFailed (both exit 3), a
    bad DSN option or a missing privilege -> BadInput (exit 2)."""
    import psycopg

    try:
        yield
    except psycopg.OperationalError as exc:
        if exc.sqlstate is None:  # no answer at all: the connection failed
            raise BackendUnavailable(
                f"{what}: {first_line(exc)}",
                hint="start PostgreSQL or pass --dsn of a server that answers",
            ) from exc
        raise ProbeFailed(
            f"{what}: {first_line(exc)}",
            hint="the server answered but is not set up for this bench: fix what the "
            "message names, or pass --dsn of another server",
        ) from exc
    except psycopg.ProgrammingError as exc:  # a bad DSN option, a missing privilege
        raise BadInput(f"{what}: {first_line(exc)}", hint="check --dsn") from exc


def _terminated(signum: int, frame: Any) -> None:
    # SystemExit unwinds like an exception, so every finally (scratch databases, temporary
    # directories, child processes) runs on SIGTERM as on Ctrl-C.
    raise SystemExit(SIGTERM_EXIT)


def run(name: str, main: Callable[[], int]) -> NoReturn:
    """Run a bench's ``main`` and exit with its code; a DeviceLabError prints one line and
    exits with its code (2 or 3), Ctrl-C one line and 130 (after main's cleanup ran)."""
    prog = f"bench/{name}.py"
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        # Children killed by the same Ctrl-C (Playwright's driver) leave futures whose
        # "never retrieved" reports at exit would follow this line: they add nothing.
        logging.getLogger("asyncio").disabled = True
        code = 130
    except DeviceLabError as exc:
        print(f"{prog}: error: {exc.one_line()}", file=sys.stderr)
        code = exc.exit_code
    sys.exit(code)
