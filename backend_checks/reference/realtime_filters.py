"""postgres_changes filters: ``column=op.value`` joined by commas (AND), as Supabase reads them.

Operators: eq, neq, lt, lte, gt, gte, in, is (null/true/false/unknown), like, ilike, match,
imatch, isdistinct, each negatable with ``not.`` (Supabase's server parser accepts eq..gte,
in, ``is.null`` and ``not.is.null``; realtime-js's filter builder can also emit the others).
Values may be double-quoted PostgREST-style (``name=eq."a,b"``); a comma may be escaped
``\\,``; commas inside ``in.(...)`` do not split.

Values are compared as the column's PostgreSQL type (numbers as decimals, uuids case-blind,
timestamps as instants, booleans as booleans, the rest as text); a value the type cannot
take (``conversation_id=eq.notauuid``, ``id=eq.1.5`` on an integer) is refused when the
filter is parsed, as Supabase's ``subscription_check_filters`` refuses it. A comparison with NULL is
false, as in SQL (Supabase's ``is_visible_through_filters`` does the same).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

__all__ = ["Condition", "FilterError", "matches", "parse_filter"]

_OPERATORS: Final = frozenset(
    {"eq", "neq", "lt", "lte", "gt", "gte", "in", "is", "like", "ilike", "match", "imatch"}
    | {"isdistinct"}
)
_NUMERIC: Final = frozenset({"int2", "int4", "int8", "float4", "float8", "numeric", "oid"})
_INTEGERS: Final = frozenset({"int2", "int4", "int8", "oid"})
_INTEGER: Final = re.compile(r"^\s*[+-]?\d+\s*$")
_TIMES: Final = frozenset({"timestamptz", "timestamp", "date"})


class FilterError(ValueError):
    """A filter string that cannot be parsed or does not fit the table."""


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``column=[not.]op.value`` term; ``values`` holds the items of ``in``."""

    column: str
    op: str
    value: str | None
    values: tuple[str, ...] = ()
    negate: bool = False


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and parentheses; ``\\,`` never splits."""
    parts: list[str] = []
    buf: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in text:
        if escaped:
            buf.append(char)
            escaped = False
        elif char == "\\":
            buf.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            buf.append(char)
        elif char == "(" and not quoted:
            depth += 1
            buf.append(char)
        elif char == ")" and not quoted:
            depth = max(depth - 1, 0)
            buf.append(char)
        elif char == sep and depth == 0 and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(char)
    parts.append("".join(buf))
    return parts


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw.replace("\\,", ",")


def _parse_term(term: str) -> Condition:
    column, eq, rest = term.partition("=")
    column = column.strip()
    if not eq or not column:
        raise FilterError(f"missing '=' in filter part: {term!r}")
    negate = False
    rest = rest.strip()
    if rest.startswith("not."):
        negate, rest = True, rest[4:]
    op, dot, raw = rest.partition(".")
    if not dot:
        raise FilterError(f"invalid filter format {term!r}, expected '<column>=<op>.<value>'")
    if op not in _OPERATORS:
        raise FilterError(f"unsupported filter type {op!r}; supported: {sorted(_OPERATORS)}")
    if op == "in":
        inner = raw.strip()
        if not (inner.startswith("(") and inner.endswith(")")):
            raise FilterError("`in` filter value must be wrapped by parentheses")
        items = tuple(_unquote(item) for item in _split(inner[1:-1], ",") if item.strip())
        return Condition(column, op, None, items, negate)
    value = _unquote(raw)
    if op == "is" and value.lower() not in {"null", "true", "false", "unknown"}:
        raise FilterError(f"`is` takes null, true, false or unknown, not {value!r}")
    return Condition(column, op, value, (), negate)


def parse_filter(text: str | None, column_types: dict[str, str]) -> tuple[Condition, ...]:
    """The conditions of a filter string, checked against the table's columns.

    ``column_types`` maps column name to its pg_type name. Raises FilterError when the
    string is malformed, names an unknown column, or holds a value the column's type
    cannot take.
    """
    if not text or not text.strip():
        return ()
    conditions = tuple(_parse_term(part.strip()) for part in _split(text, ",") if part.strip())
    for cond in conditions:
        if cond.column not in column_types:
            raise FilterError(f"invalid column for filter {cond.column}")
        kind = column_types[cond.column]
        for value in cond.values or ((cond.value,) if cond.op != "is" else ()):
            if value is not None and _coerce(kind, value) is None:
                raise FilterError(f"invalid input value {value!r} for column {cond.column}")
    return conditions


def _coerce(kind: str, value: Any) -> Any:
    """``value`` as a comparable Python value of pg type ``kind``; None when it cannot be."""
    if value is None:
        return None
    try:
        if kind in _INTEGERS and isinstance(value, str) and not _INTEGER.match(value):
            return None  # PostgreSQL's int input refuses "1.5" and "1e3" too
        if kind in _NUMERIC:
            return Decimal(str(value)) if not isinstance(value, bool) else None
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"t", "true", "yes", "on", "1"}:
                return True
            if text in {"f", "false", "no", "off", "0"}:
                return False
            return None
        if kind == "uuid":
            # Canonical text, so "ABCDEF00..." and a hyphen-less form compare equal; a
            # value that is no uuid is refused at subscribe time (Supabase casts it).
            return str(uuid.UUID(str(value).strip()))
        if kind in _TIMES:
            parsed: date = datetime.fromisoformat(str(value).strip().replace(" ", "T"))
            return parsed
    except (InvalidOperation, ValueError):
        return None
    if isinstance(value, list):
        return "{" + ",".join("NULL" if v is None else str(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _like(pattern: str, flags: int) -> re.Pattern[str]:
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), flags | re.DOTALL)


def _compare(op: str, left: Any, right: Any) -> bool | None:
    if op == "eq":
        return bool(left == right)
    if op == "neq":
        return bool(left != right)
    try:
        if op == "lt":
            return bool(left < right)
        if op == "lte":
            return bool(left <= right)
        if op == "gt":
            return bool(left > right)
        if op == "gte":
            return bool(left >= right)
    except TypeError:  # e.g. naive vs aware timestamps: SQL would refuse, so no match
        return None
    return None


def _holds(cond: Condition, kind: str, raw: Any) -> bool:
    if cond.op == "is":
        wanted = (cond.value or "").lower()
        if wanted in {"null", "unknown"}:
            result = raw is None
        else:
            result = raw is not None and _coerce("bool", raw) is (wanted == "true")
        return result != cond.negate
    if cond.op == "isdistinct":
        left, right = _coerce(kind, raw), _coerce(kind, cond.value)
        return bool(left != right) != cond.negate
    if raw is None:
        return False  # NULL compared with anything is unknown: the row does not match
    left = _coerce(kind, raw)
    outcome: bool | None
    if cond.op == "in":
        outcome = any(left == _coerce(kind, item) for item in cond.values)
    elif cond.op in {"like", "ilike"}:
        flags = re.IGNORECASE if cond.op == "ilike" else 0
        outcome = _like(cond.value or "", flags).fullmatch(str(raw)) is not None
    elif cond.op in {"match", "imatch"}:
        flags = re.IGNORECASE if cond.op == "imatch" else 0
        try:
            outcome = re.search(cond.value or "", str(raw), flags) is not None
        except re.error:
            outcome = False
    else:
        outcome = _compare(cond.op, left, _coerce(kind, cond.value))
    if outcome is None:
        return False
    return outcome != cond.negate


def matches(
    conditions: tuple[Condition, ...], record: dict[str, Any], column_types: dict[str, str]
) -> bool:
    """Whether ``record`` (column name -> JSON value) passes every condition.

    A condition on a column the record lacks fails, even ``is.null``: walrus joins the
    filters to the record's columns (a DELETE's old record holds only its identity).
    """
    return all(
        cond.column in record
        and _holds(cond, column_types.get(cond.column, "text"), record[cond.column])
        for cond in conditions
    )
