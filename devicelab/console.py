"""The ``devicelab`` console script (and ``python -m devicelab``).

Importing the CLI (Typer, click, the command modules) takes a moment; a Ctrl-C in that
moment raised KeyboardInterrupt out of the script's own import line, a traceback where
every other interrupt prints one line. This module imports nothing itself, so the script's
import of it cannot be interrupted in any real window, and it catches the interrupt around
the CLI's import.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

#: The exit code after Ctrl-C (128 + SIGINT), as devicelab.cli returns it.
_INTERRUPTED = 130


def main() -> None:
    """Run the CLI; exits with its code. Returns nothing and raises nothing but
    SystemExit: Ctrl-C while the CLI is still loading is one line and exit 130."""
    try:
        from devicelab.cli import main as run
    except KeyboardInterrupt:
        # A closed pipe or a hung-up terminal (EPIPE, EIO) must not make it a traceback.
        try:
            sys.stderr.write("devicelab: interrupted\n")
            sys.stderr.flush()
        except OSError:  # what it holds goes nowhere: the exit flush would fail (exit 120)
            _to_devnull(sys.stderr.fileno())
        sys.exit(_INTERRUPTED)
    run()


def _to_devnull(fd: int) -> None:
    """Point ``fd`` at /dev/null. Raises nothing (an fd that cannot be is left alone)."""
    import os  # loaded at interpreter start: free

    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass
