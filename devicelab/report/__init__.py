"""Reports made from a results.json alone: Markdown, JUnit XML and one self-contained HTML.

    results = load_results("out/results.json")          # BadInput on a bad file
    text = render_markdown(results, load_targets())     # or render_html / render_junit
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

from devicelab.errors import BadInput, ConfigError
from devicelab.models import Results, TargetBook
from devicelab.report._common import fmt_number, measured_text
from devicelab.report.files import write_text_atomic, write_texts
from devicelab.report.html import render_html
from devicelab.report.junit import render_junit
from devicelab.report.markdown import render_markdown

__all__ = [
    "FILE_NAMES",
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


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _problem(error: Any) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        return f"unknown field {loc[-1]!r}"
    if kind == "missing":
        return f"missing required field {loc[-1]!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if "input" in error and kind != "value_error":
        found = repr(error["input"])
        found = found if len(found) <= 60 else found[:57] + "..."
        return f"{message[0].lower()}{message[1:]}, found {found}"
    return message


def _no_number(token: str) -> float:
    # json reads NaN, Infinity and 1e999 as floats; the contract has no such values, and a
    # report would show a check "✅ NaN ms".
    raise _NotANumber(token)


class _NotANumber(ValueError):
    """A JSON number the contract does not allow (NaN, ±Infinity, out of float range)."""


def _float(token: str) -> float:
    value = float(token)
    return value if math.isfinite(value) else _no_number(token)


def _int(token: str) -> int:
    if len(token.lstrip("-")) > _MAX_DIGITS:
        raise _NotANumber(f"an integer of {len(token.lstrip('-'))} digits")
    return int(token)


#: Python writes no integer of more digits as text (sys.get_int_max_str_digits).
_MAX_DIGITS = 4300


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


def load_results(
    path: str | os.PathLike[str], *, warn: Callable[[str], None] | None = None
) -> Results:
    """Read and validate a results.json.

    Returns the Results. Raises ConfigError (a BadInput, exit 2) whose one-line message
    names the file and, for JSON errors, line:column, for contract errors, the dotted
    field (``checks[2].status``); ``.field`` holds that path. Also refused: NaN,
    Infinity and numbers beyond the float range, integers of more than 4,300 digits,
    nesting too deep to read and a file without ``schema``. A ``summary`` that does not
    count the checks' statuses is recounted (the reports always count the checks), and
    ``warn`` is called with one line saying what it claimed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", hint="give the results.json of a run") from None
    except IsADirectoryError:
        raise ConfigError(
            f"{path}: is a folder", hint=f"give {path / 'results.json'} instead"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})", hint="check the file") from exc
    try:
        data = json.loads(text, parse_constant=_no_number, parse_float=_float, parse_int=_int)
    except json.JSONDecodeError as exc:
        where = f"{path}:{exc.lineno}:{exc.colno}"
        raise ConfigError(
            f"{where}: not valid JSON: {exc.msg}", hint="fix the JSON there", location=where
        ) from None
    except _NotANumber as exc:
        raise ConfigError(
            f"{path}: not a number the contract allows: {exc}",
            hint="a measured value is a finite number; write null where nothing was measured",
            location=str(path),
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{path}: nested too deeply to read", hint="no results.json nests this deep"
        ) from None
    if isinstance(data, dict) and "schema" not in data:
        raise ConfigError(
            f"{path}: schema: missing required field 'schema'",
            hint='a results.json starts with "schema": "devicelab.results/1"',
            location=str(path),
            field="schema",
        )
    try:
        results = Results.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        field = _dotted(tuple(first["loc"]))
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
    texts = {
        "json": results.to_json() + "\n",
        "md": render_markdown(results, book),
        "html": render_html(results, book),
        "junit": render_junit(results),
    }
    paths = {kind: folder / FILE_NAMES[kind] for kind in texts}
    write_texts({paths[kind]: text for kind, text in texts.items()})
    return paths
