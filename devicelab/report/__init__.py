"""Reports made from a results.json alone: Markdown, JUnit XML and one self-contained HTML.

    results = load_results("out/results.json")          # BadInput on a bad file
    text = render_markdown(results, load_targets())     # or render_html / render_junit
    text = render_markdown(results, comparison=compare(results, load_results("old.json")))
    write_all(results, "out/")                          # results.json + the three reports

Every file is written atomically (a temporary file in the same folder, then renamed), so
a reader never sees half a report, and write_all's four files are replaced together
(devicelab/report/files.py). Renderers are pure: they read no file and import
nothing heavy.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from devicelab.config import dotted_path
from devicelab.errors import BadInput, ConfigError
from devicelab.models import SCHEMA_ID, Results, TargetBook
from devicelab.models.results import written
from devicelab.report._common import fmt_number, mask_secrets, measured_text
from devicelab.report.compare import DEFAULT_THRESHOLD_PCT, Comparison, compare
from devicelab.report.files import write_text_atomic, write_texts
from devicelab.report.html import render_html
from devicelab.report.junit import render_junit
from devicelab.report.markdown import render_markdown

__all__ = [
    "DEFAULT_THRESHOLD_PCT",
    "FILE_NAMES",
    "Comparison",
    "compare",
    "fmt_number",
    "load_results",
    "measured_text",
    "render_html",
    "render_junit",
    "render_markdown",
    "write_all",
    "write_text_atomic",
]

#: The files ``write_all`` writes, by format name (the names ``--out DIR`` promises).
FILE_NAMES = {
    "json": "results.json",
    "md": "report.md",
    "html": "report.html",
    "junit": "junit.xml",
}


def _as_json(value: Any) -> str:
    """``value`` as the file spells it (``true``, ``null``, ``"x"``, not Python's ``True``,
    ``None``, ``'x'``): the user looks for it in their JSON. Not JSON: its repr."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _shown(text: str, limit: int = 60) -> str:
    """A part of the file quoted in an error: secrets masked, control characters
    replaced, cut to ``limit`` characters (an error is one line, and may be logged)."""
    shown = str(mask_secrets(text))
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _problem(error: Any) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        return f"unknown field {_shown(repr(loc[-1]))}"
    if kind == "missing":
        return f"missing required field {loc[-1]!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if "input" in error and kind != "value_error":
        return f"{message[0].lower()}{message[1:]}, found {_shown(_as_json(error['input']))}"
    return message


class _NotANumber:
    """Where the JSON held a number the contract does not allow (NaN, ±Infinity, beyond
    the float range, an integer too long to read): kept in place while the file is parsed,
    so the error can name the field it sits in."""

    def __init__(self, what: str) -> None:
        self.what = what


class _Numbers:
    """json.loads' number hooks: NaN, Infinity and 1e999 (which json reads as floats) and
    over-long integers become _NotANumber; ``found`` says whether any did, so a file
    without one is not walked again."""

    def __init__(self) -> None:
        self.found = False

    def constant(self, token: str) -> _NotANumber:
        # The contract has no such values, and a report would show a check "✅ NaN ms".
        self.found = True
        return _NotANumber(token)

    def read_float(self, token: str) -> float | _NotANumber:
        value = float(token)
        return value if math.isfinite(value) else self.constant(token)

    def read_int(self, token: str) -> int | _NotANumber:
        digits = len(token.lstrip("-"))
        return (
            self.constant(f"an integer of {digits} digits") if digits > _MAX_DIGITS else int(token)
        )


#: The largest results.json read: an overnight battery run's is a few MB.
_MAX_BYTES = 256 << 20

#: Python writes no integer of more digits as text (sys.get_int_max_str_digits).
_MAX_DIGITS = 4300


def _first_not_a_number(data: Any) -> tuple[str, _NotANumber] | None:
    """The dotted path (``checks[3].value``) and the token of the first number the
    contract does not allow, in the file's order, or None. Walks without recursion: the
    parser has read deeper nesting than Python's stack allows."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, _NotANumber):
            return dotted_path(loc), value
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, list):
            items = list(enumerate(value))
        else:
            continue
        stack += [((*loc, key), item) for key, item in reversed(items)]
    return None


def _summary_problem(data: Any, results: Results) -> str | None:
    """What a file's own summary says that its checks do not, or None."""
    given = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(given, dict):
        return None
    counted = results.summary.model_dump(by_alias=True)
    wrong = [
        f"{k} {given[k]} (the checks: {counted[k]})"
        for k in counted
        if k in given and given[k] != counted[k]
    ]
    return ", ".join(wrong) if wrong else None


def _read_text(path: Path) -> str:
    """The text of the results file ``path``. Raises ConfigError when it is missing, a
    folder, unreadable, not UTF-8 or larger than any results.json."""
    try:
        with path.open("rb") as handle:  # bounded: /dev/zero, or a log given by mistake
            raw = handle.read(_MAX_BYTES + 1)
        if len(raw) > _MAX_BYTES:
            raise ConfigError(
                f"{path}: larger than {_MAX_BYTES >> 20} MiB: no results.json is",
                hint="give the results.json of a run",
            )
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", hint="give the results.json of a run") from None
    except IsADirectoryError:
        raise ConfigError(
            f"{path}: is a folder", hint=f"give {path / 'results.json'} instead"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})", hint="check the file") from exc


def load_results(
    path: str | os.PathLike[str], *, warn: Callable[[str], None] | None = None
) -> Results:
    """Read and validate a results.json.

    Returns the Results. Raises ConfigError (a BadInput, exit 2) whose one-line message
    names the file and, for JSON errors, line:column, for contract errors, the dotted
    field (``checks[2].status``); ``.field`` holds that path. Types are read as strictly
    as the JSON Schema says (``"552"`` or ``true`` is no number). Also refused, naming
    the field: NaN, Infinity and numbers beyond the float range, integers of more than
    4,300 digits; and nesting too deep to read and a file without ``schema``. A
    ``summary`` that does not count the checks' statuses is recounted (the reports always
    count the checks), and ``warn`` is called with one line saying what it claimed.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        numbers = _Numbers()
        data = json.loads(
            text,
            parse_constant=numbers.constant,
            parse_float=numbers.read_float,
            parse_int=numbers.read_int,
        )
    except json.JSONDecodeError as exc:
        where = f"{path}:{exc.lineno}:{exc.colno}"
        if exc.msg.startswith("Unterminated string"):  # json: "... starting at" (a pos)
            problem = "the string that starts here is never closed: the file ends inside it"
        elif not text[exc.pos :].strip():
            problem = f"{exc.msg}: the file ends here"
        else:
            problem = exc.msg
        if problem != exc.msg:
            raise ConfigError(
                f"{where}: not valid JSON: {problem}",
                hint="the file was cut short, as when a run stops while writing it: take it"
                " again from the run's --out folder",
                location=where,
            ) from None
        raise ConfigError(
            f"{where}: not valid JSON: {problem}", hint="fix the JSON there", location=where
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{path}: nested too deeply to read", hint="no results.json nests this deep"
        ) from None
    if numbers.found and (found := _first_not_a_number(data)) is not None:
        field, number = found
        raise ConfigError(
            f"{path}: {field}: not a number the contract allows: {number.what}",
            hint="a measured value is a finite number; write null where nothing was measured",
            location=str(path),
            field=field,
        )
    if isinstance(data, dict) and "schema" not in data:
        raise ConfigError(
            f"{path}: schema: missing required field 'schema'",
            hint='a results.json starts with "schema": "devicelab.results/1"',
            location=str(path),
            field="schema",
        )
    schema = data.get("schema") if isinstance(data, dict) else None
    if isinstance(schema, str) and schema.startswith("devicelab.results/") and schema != SCHEMA_ID:
        raise ConfigError(
            f"{path}: schema: {schema!r} is another version of the results contract than"
            f" this devicelab's {SCHEMA_ID!r}",
            hint="make the report with the devicelab version that wrote the file, or install"
            " that version",
            location=str(path),
            field="schema",
        )
    try:
        # Strict: a file's types are the JSON Schema's ("552" or true is no number), where
        # pydantic's default would coerce them. Times are text in JSON (see RunInfo).
        results = Results.model_validate(data, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        field = _shown(dotted_path(first["loc"]), limit=120)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(
            f"{path}: {field}: {_problem(first)}{more}",
            hint="the file must follow the devicelab.results/1 contract "
            "(devicelab/schemas/results.schema.json)",
            location=str(path),
            field=field,
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{path}: nested too deeply to read", hint="no results.json nests this deep"
        ) from None
    wrong = _summary_problem(data, results)
    if wrong is not None and warn is not None:
        warn(f"{path}: summary: does not count the checks, recounted: {wrong}")
    return results


def write_all(
    results: Results, out_dir: str | os.PathLike[str], book: TargetBook | None = None
) -> dict[str, Path]:
    """Write results.json, report.md, report.html and junit.xml into ``out_dir`` (made
    if missing), the four together: every text is rendered and staged before the first
    rename, so a failure leaves the old set whole.

    Returns {"json": path, "md": path, "html": path, "junit": path}. Raises BadInput when
    the folder cannot be made or written (or one of the names is a folder),
    EnvironmentProblem on a full disk.
    """
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(
            f"{folder}: cannot make the folder ({exc.strerror})", hint="check the path"
        ) from exc
    # The reports from the numbers results.json holds: the set reads the same rebuilt.
    results = results.model_copy(update={"checks": [written(c) for c in results.checks]})
    texts = {
        "json": results.to_json() + "\n",
        "md": render_markdown(results, book),
        "html": render_html(results, book),
        "junit": render_junit(results),
    }
    paths = {kind: folder / FILE_NAMES[kind] for kind in texts}
    write_texts({paths[kind]: text for kind, text in texts.items()})
    return paths
