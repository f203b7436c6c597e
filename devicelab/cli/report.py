"""``devicelab report``: turn a results.json into Markdown, HTML or JUnit XML."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from devicelab.models import TargetBook
    from devicelab.report.compare import Comparison

__all__ = ["ReportFormat", "register"]


class ReportFormat(enum.StrEnum):
    """The formats of ``--format``."""

    md = "md"
    html = "html"
    junit = "junit"


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to ``app``."""

    @app.command("report")
    def report_command(
        results: Annotated[
            Path, typer.Argument(metavar="RESULTS.json", help="results.json of a run")
        ],
        # A str, checked in _format: Click's choice error spoke of pydantic's "Value error".
        fmt: Annotated[str, typer.Option("--format", "-f", help="md, html or junit")] = "md",
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="write here (atomically)")
        ] = None,
        targets: Annotated[
            Path | None,
            typer.Option("--targets", help="targets.yaml for the story matrix (default: lab's)"),
        ] = None,
        baseline: Annotated[
            Path | None,
            typer.Option(
                "--baseline",
                metavar="BASELINE.json",
                help="compare with this earlier run's results.json",
            ),
        ] = None,
        threshold: Annotated[
            float | None,
            typer.Option(
                "--threshold", metavar="PCT", help="how far a value must move to count (10 %)"
            ),
        ] = None,
        fail_on_regression: Annotated[
            bool,
            typer.Option(
                "--fail-on-regression", help="exit 1 when a check regressed against --baseline"
            ),
        ] = False,
    ) -> None:
        """Write the report of RESULTS.json to stdout, or to FILE with -o."""
        from devicelab import report

        kind = _format(fmt)
        _check_baseline_options(baseline, threshold, fail_on_regression)
        if output is not None:
            _check_not_an_input(output, results=results, baseline=baseline, targets=targets)
        loaded = report.load_results(results, warn=_warn)
        comparison = None
        if baseline is not None:
            before = report.load_results(baseline, warn=_warn)
            comparison = report.compare(
                loaded, before, threshold_pct=threshold or report.DEFAULT_THRESHOLD_PCT
            )
        book, book_error = _targets(targets)
        render = {"md": report.render_markdown, "html": report.render_html}
        text = (
            report.render_junit(loaded, comparison=comparison)
            if kind is ReportFormat.junit
            else render[kind](loaded, book, book_error=book_error, comparison=comparison)
        )
        if output is None:
            _emit(text)
        else:
            report.write_text_atomic(output, text)
        if comparison is not None:
            _say_comparison(comparison)
            if fail_on_regression and comparison.regressed:
                raise typer.Exit(1)


def _check_baseline_options(baseline: Path | None, threshold: float | None, gate: bool) -> None:
    """Refuse (BadInput, exit 2) the comparison's options without --baseline and a
    threshold that is not a finite number > 0: before anything is read or written."""
    import math

    from devicelab.errors import BadInput

    if baseline is None and (threshold is not None or gate):
        given = "--threshold" if threshold is not None else "--fail-on-regression"
        raise BadInput(
            f"{given} compares with a baseline, and none was given",
            hint="add --baseline BASELINE.json (an earlier run's results.json)",
        )
    if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
        raise BadInput(
            f"--threshold {threshold:g}: expected a finite number of percent > 0",
            hint="e.g. --threshold 10 (a check must move by more than 10 %)",
        )


def _check_not_an_input(output: Path, **inputs: Path | None) -> None:
    """Refuse (BadInput, exit 2) an ``-o`` that is one of the files the report is made
    from (by any path or link to it): writing the report would replace that file."""
    from devicelab.errors import BadInput

    for option, path in inputs.items():
        if path is None:
            continue
        try:
            same = output.samefile(path)
        except OSError:  # either is missing: the reader says so, or the writer makes it
            same = output.resolve() == path.resolve()
        if same:
            what = "RESULTS.json" if option == "results" else f"the --{option} file"
            raise BadInput(
                f"-o {output}: is {what} ({path}); the report would replace it",
                hint="write the report to another file, e.g. -o report.md",
            )


def _say_comparison(comparison: Comparison) -> None:
    """One line on stderr: the counts and the checks that regressed, with their move."""
    worse = ", ".join(f"{c.name} ({c.moved})" for c in comparison.regressed)
    line = f"devicelab: against baseline {comparison.baseline.id}: {comparison.counts_text()}"
    typer.echo(f"{line}; regressed: {worse}" if worse else line, err=True)


def _format(given: str) -> ReportFormat:
    """The report format called ``given``. Raises BadInput (exit 2) for another, naming
    the closest format when one is near."""
    import difflib

    from devicelab.errors import BadInput

    known = [f.value for f in ReportFormat]
    if given in known:
        return ReportFormat(given)
    close = difflib.get_close_matches(given.casefold(), known, n=1, cutoff=0.6)
    said = f"; did you mean {close[0]!r}?" if close else ""
    raise BadInput(f"unknown report format {given!r}{said}", hint=f"use one of {', '.join(known)}")


def _emit(text: str) -> None:
    """``text`` to stdout as UTF-8 whatever the locale (reports hold ✅ and µ); a reader
    that closed the pipe early (``| head``) is not an error.

    Raises EnvironmentProblem (exit 3) when stdout cannot take it (``> /dev/full``, a
    full disk), as ``-o`` does."""
    import os

    from devicelab.errors import EnvironmentProblem

    try:
        sys.stdout.buffer.write(text.encode("utf-8", errors="replace"))
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at devnull so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:
        # The unwritten bytes stay buffered: drop them, or the exit's flush fails again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise EnvironmentProblem(
            f"stdout: cannot write the report ({exc.strerror or exc})",
            hint="free some space, or write it elsewhere with -o FILE",
        ) from exc


def _warn(message: str) -> None:
    typer.echo(f"devicelab: warning: {message}", err=True)


def _targets(path: Path | None) -> tuple[TargetBook | None, str | None]:
    """The target book and, when there is none, why: ``path`` if given (its errors stop
    the command, exit 2), else the lab's targets.yaml when there is one; a missing or
    broken default only thins the matrix to the targets the checks carry, with a warning
    and the same words in the report, since results.json holds the verdicts."""
    from devicelab import config
    from devicelab.errors import ConfigError

    if path is not None:
        return config.load_targets(path), None
    try:
        return config.load_targets(), None
    except ConfigError as exc:
        typer.echo(f"devicelab: warning: no story targets ({exc.one_line()})", err=True)
        return None, str(exc)
