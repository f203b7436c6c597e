"""The story's "Performance Targets by Platform" table, filled in with one run's verdicts.

Nine rows (the story's metrics) by three columns (Web (Desktop), iOS/Android (WiFi),
iOS/Android (4G)). Every cell shows its target from profiles/targets.yaml; the cells of
the column this run is judged in also show the verdict and the measured value, or "not
run" when the run has no such check. A run judged in the 3G column gets that column too.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from devicelab.errors import DeviceLabError
from devicelab.models import Check, Results, TargetBook
from devicelab.report._common import (
    STATUS_ICON,
    check_target_label,
    fmt_judged,
    fmt_number,
    is_unjudged,
    target_label,
)
from devicelab.targets import MATRIX_COLUMNS, STORY_MATRIX, cell, column_for, resolve

__all__ = ["Matrix", "MatrixCell", "MatrixRow", "build_matrix", "judged_column"]

_EXTRA_COLUMNS = {"3g": "Mobile (3G)"}


@dataclass(frozen=True)
class MatrixCell:
    """One cell: its target text and, in the judged column, the run's check (if any) and
    the run's further checks of the same id (``more``: a session may measure a check
    again, on a switched link, and the cell shows every verdict)."""

    column: str
    target: str
    judged: bool
    check: Check | None = None
    more: tuple[Check, ...] = ()

    @property
    def state(self) -> str:
        """pass, fail, skip or error; "not run" in the judged column without a check;
        "" in the other columns."""
        if not self.judged:
            return ""
        return self.check.status if self.check is not None else "not run"

    @property
    def checks(self) -> tuple[Check, ...]:
        """Every check of the cell, in the run's order (empty outside the judged column
        and where the run has none)."""
        return () if self.check is None else (self.check, *self.more)

    def measured(self, check: Check | None = None) -> str:
        """The measured value of ``check`` (default: the cell's first) ("312 ms", with the
        digits that keep it on its side of the target: "199.96 ms" against "< 200 ms"),
        "812 ms, no target" for a value judged against nothing, "skipped", the status
        without a value, "not measured (NaN)" for a value that is no number, or ""."""
        check = check if check is not None else self.check
        if check is None:
            return ""
        if is_unjudged(check):
            return f"{fmt_judged(check.value, check.unit, None)}, no target"
        if check.status == "skip":
            return "skipped"
        if check.value is None:
            return check.status
        if not math.isfinite(check.value):
            return f"not measured ({fmt_number(check.value)})"
        return fmt_judged(check.value, check.unit, check.target)

    def verdict(self) -> str:
        """The verdict text: "✅ 312 ms", "⏭ skipped", "not run", or "" (not judged); a
        check measured more than once gives each verdict: "✅ 312 ms · ❌ 640 ms"."""
        if not self.judged:
            return ""
        if self.check is None:
            return "not run"
        return " · ".join(f"{self.icon(c)} {self.measured(c)}" for c in self.checks)

    @staticmethod
    def icon(check: Check) -> str:
        """The status mark of ``check``; ⚠ for a value that is no number, since a pass
        mark beside "NaN" would read as a measured pass."""
        value = check.value
        return STATUS_ICON[
            "error" if value is not None and not math.isfinite(value) else check.status
        ]


@dataclass(frozen=True)
class MatrixRow:
    """One metric of the story with its cells, in column order."""

    check_id: str
    title: str
    cells: list[MatrixCell]


@dataclass(frozen=True)
class Matrix:
    """The table: columns (id, title), the judged column id (or None), rows, a note."""

    columns: list[tuple[str, str]]
    judged: str | None
    rows: list[MatrixRow]
    notes: list[str] = field(default_factory=list)


def judged_column(results: Results) -> str | None:
    """The story column this run is judged in, or None (a backend run, or unknown).

    The columns the checks recorded win (their targets name it); else the network name
    decides as DESIGN.md says, looking the profile up in profiles/networks.yaml when the
    name is not a column itself.
    """
    run = results.run
    if run.device is None:
        return None
    recorded = Counter(
        c.target.column for c in results.checks if c.target is not None and c.target.column
    )
    recorded.pop("any", None)
    if recorded:
        return recorded.most_common(1)[0][0]
    platform = run.device.platform
    name = run.network.name if run.network is not None else "none"
    if name in ("none", ""):
        return column_for(platform, None)
    if name in ("wifi", "4g"):
        return name
    if name in ("slow-3g", "fast-3g"):
        return "3g"
    try:
        from devicelab import config

        return column_for(platform, config.network_profile(name))
    except DeviceLabError:
        # An unknown profile (a catalog entry of another lab): judge nothing rather
        # than guess a column.
        return None


def _platform_of(column: str, results: Results) -> str | None:
    if column == "web":
        return "web"
    device = results.run.device
    if device is not None and device.platform in ("android", "ios"):
        return device.platform
    return None


def _not_applicable(check_id: str, column: str, results: Results, book: TargetBook) -> bool:
    """Whether the story's N/A cells rule out ``check_id`` for this run's device: its
    platform's own column (the one the lab skips by, scenarios.not_applicable) or
    ``column`` marks it N/A."""
    device = results.run.device
    if device is None:
        return False
    # The check carries no N/A mark (an N/A skip has no target, value or evidence, like a
    # check not built yet), so the book decides, by the lab's own rule.
    for where in (column_for(device.platform, None), column):
        row = resolve(book, check_id, device.platform, where)
        if row is not None and not row.applies:
            return True
    return False


def build_matrix(
    results: Results, book: TargetBook | None = None, *, book_error: str | None = None
) -> Matrix:
    """The story matrix of ``results``; targets from ``book`` (None: only the judged
    column's targets, taken from the checks themselves). ``book_error`` says why there
    is no book when the lab's targets.yaml could not be read (its file and line), for the
    note that would otherwise say none was given."""
    judged = judged_column(results)
    columns = list(MATRIX_COLUMNS)
    if judged in _EXTRA_COLUMNS:
        columns.append((judged, _EXTRA_COLUMNS[judged]))
    # A session may measure a check more than once (LabSession.measure on a switched
    # link, the pytest plugin's tests): the cell shows them all, in the run's order.
    by_id: dict[str, list[Check]] = {}
    for run_check in results.checks:
        by_id.setdefault(run_check.id, []).append(run_check)
    notes: list[str] = []
    if results.run.device is None:
        notes.append("A backend run: the story's client-side matrix has no verdicts here.")
    elif judged is None:
        notes.append("The network of this run maps to no column of the story: no verdicts.")
    if book is None and book_error:
        notes.append(
            f"The story's targets could not be read ({book_error}): only the targets the "
            "checks carry are shown."
        )
    elif book is None:
        notes.append("No targets.yaml was given: only the targets the checks carry are shown.")
    rows = []
    for check_id, title in STORY_MATRIX:
        cells = []
        for column, _ in columns:
            is_judged = column == judged
            found = by_id.get(check_id, []) if is_judged else []
            check = found[0] if found else None
            if check is not None and check.value is not None and check.target is None:
                # Measured and judged against nothing: the book's row for the column can be
                # another platform's (3G's are the phones'), a target this check never had.
                label = "—"
            elif (
                is_judged
                and book is not None
                and (check is None or (check.status == "skip" and check.value is None))
                and _not_applicable(check_id, column, results, book)
            ):
                # The web device skips the local cache on every network (the story's Web
                # column says N/A); the phones' target of a shaped column was never its own,
                # whether the run selected the check or not.
                label = "N/A"
            elif book is not None:
                row = cell(book, check_id, column, _platform_of(column, results))
                label = "—" if row is None else target_label(row.op, row.value, row.unit)
                if row is not None and not row.applies:
                    label = "N/A"
            else:
                label = check_target_label(check.target) if check is not None else "—"
            cells.append(
                MatrixCell(
                    column=column,
                    target=label,
                    judged=is_judged,
                    check=check,
                    more=tuple(found[1:]),
                )
            )
        rows.append(MatrixRow(check_id=check_id, title=title, cells=cells))
    return Matrix(columns=columns, judged=judged, rows=rows, notes=notes)
