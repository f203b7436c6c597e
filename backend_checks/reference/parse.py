"""Parse PostgREST's URL language into plain data: select lists, filters, order, ranges.

Nothing here touches SQL: the output names columns and operators as strings that
``query.py`` checks against the catalog and an operator table, and carries values as
strings to be bound. A malformed parameter raises ApiError 400 with code PGRST100, as
PostgREST answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from backend_checks.reference.errors import ApiError, rest_error

__all__ = [
    "FILTER_OPERATORS",
    "RESERVED_PARAMS",
    "Condition",
    "Logic",
    "OrderTerm",
    "Prefer",
    "SelectItem",
    "parse_filter_param",
    "parse_int",
    "parse_logic_param",
    "parse_order",
    "parse_prefer",
    "parse_range_header",
    "parse_select",
    "split_top_level",
]

#: Operators PostgREST understands and we implement (``query.py`` maps each to SQL).
FILTER_OPERATORS = frozenset(
    {
        "eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "match", "imatch",
        "is", "isdistinct", "in", "cs", "cd", "ov", "sl", "sr", "nxl", "nxr", "adj",
        "fts", "plfts", "phfts", "wfts",
    }
)  # fmt: skip

#: Query parameters that are not column filters.
RESERVED_PARAMS = frozenset(
    {"select", "order", "limit", "offset", "on_conflict", "columns", "and", "or",
     "not.and", "not.or"}
)  # fmt: skip

#: Guards against requests built to exhaust the parser.
_MAX_DEPTH = 8
_MAX_ITEMS = 200

_IDENT = r"[^\s,.:()!\"'\\;]+"
_SELECT_ITEM = re.compile(rf"^(?:(?P<alias>{_IDENT}):)?(?P<name>\*|{_IDENT})(?:::(?P<cast>\w+))?$")
_EMBED_ITEM = re.compile(
    rf"^(?:(?P<alias>{_IDENT}):)?(?P<name>{_IDENT})(?:!(?P<hint>{_IDENT}))?"
    rf"(?:!(?P<join>inner|left))?\((?P<inner>.*)\)$",
    re.S,
)
#: PostgREST's aggregates: ``count()`` and ``col.sum()`` (count, sum, avg, max, min), each
#: with an optional alias and cast.
_AGGREGATE_ITEM = re.compile(
    rf"^(?:{_IDENT}:)?(?:{_IDENT}\.)?(?:count|sum|avg|max|min)\(\s*\)(?:::\w+)?$", re.I
)
_FTS_OP = re.compile(r"^(fts|plfts|phfts|wfts)(?:\((?P<lang>[A-Za-z_]+)\))?$")


def _bad(message: str, details: str | None = None) -> ApiError:
    return rest_error(400, "PGRST100", message, details=details)


@dataclass(frozen=True)
class SelectItem:
    """One entry of ``select=``: a column (or ``*``), an optional alias and cast; or an
    embedded relation (``embed`` holds its own select list, ``hint`` the FK or column)."""

    name: str
    alias: str | None = None
    cast: str | None = None
    embed: tuple[SelectItem, ...] | None = None
    hint: str | None = None


@dataclass(frozen=True)
class Condition:
    """``column [not] op value``; ``value`` is the raw text (a list for ``in``)."""

    column: str
    op: str
    value: str | list[str]
    negated: bool = False
    #: Text search configuration of fts operators (``fts(english)``), else None.
    language: str | None = None


@dataclass(frozen=True)
class Logic:
    """``and(...)`` / ``or(...)`` of conditions and nested logic."""

    op: str
    children: list[Condition | Logic] = field(default_factory=list)
    negated: bool = False


@dataclass(frozen=True)
class OrderTerm:
    """One ``order=`` term."""

    column: str
    descending: bool = False
    nulls: str | None = None  # "first" | "last" | None


@dataclass
class Prefer:
    """The parts of the ``Prefer`` header we act on."""

    return_: str = "minimal"
    count: str | None = None
    resolution: str | None = None


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside parentheses, braces and double quotes.

    Raises ApiError 400 on unbalanced brackets or quotes.
    """
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    current: list[str] = []
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
            continue
        if ch == "\\" and quoted:
            current.append(ch)
            escaped = True
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "({":
            depth += 1
        elif not quoted and ch in ")}":
            depth -= 1
            if depth < 0:
                raise _bad("unbalanced parentheses", text)
        if ch == sep and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0 or quoted:
        raise _bad("unbalanced parentheses or quotes", text)
    parts.append("".join(current))
    if len(parts) > _MAX_ITEMS:
        raise _bad("too many items")
    return parts


def _unquote(value: str) -> str:
    """A value as written in a list or logic tree: ``"a,b"`` -> ``a,b`` (``\\"`` escapes)."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_select(text: str | None, *, depth: int = 0) -> list[SelectItem]:
    """The items of ``select=`` (``*`` when absent).

    Raises ApiError 400 on bad syntax (PGRST100) and on aggregates (PGRST123).

    Embedded relations (``alias:rel!hint(cols)``) nest; JSON paths are refused.
    """
    if text is None or text.strip() == "":
        return [SelectItem("*")]
    if depth > _MAX_DEPTH:
        raise _bad("select nested too deep")
    items: list[SelectItem] = []
    for raw in split_top_level(text):
        part = raw.strip()
        if _AGGREGATE_ITEM.match(part):
            # Supabase runs PostgREST with db-aggregates-enabled off (its default).
            raise rest_error(400, "PGRST123", "Use of aggregate functions is not allowed")
        if "(" in part:
            embed = _EMBED_ITEM.match(part)
            if not embed:
                raise _bad("failed to parse select parameter", f"select item {part[:80]!r}")
            hint = embed["hint"]
            join = embed["join"] or (hint if hint in ("inner", "left") else None)
            if hint in ("inner", "left"):
                hint = None  # a join kind, not a foreign-key hint
            if join == "inner":
                raise _bad("!inner embedding is not supported by the reference server", part[:80])
            inner = parse_select(embed["inner"] or "*", depth=depth + 1)
            items.append(SelectItem(embed["name"], embed["alias"], None, tuple(inner), hint))
            continue
        if "->" in part:
            raise _bad("JSON paths in select are not supported", f"select item {part[:80]!r}")
        match = _SELECT_ITEM.match(part)
        if not match:
            raise _bad("failed to parse select parameter", f"select item {part[:80]!r}")
        items.append(SelectItem(match["name"], match["alias"], match["cast"]))
    return items


def _parse_op_value(column: str, text: str, *, in_logic: bool) -> Condition:
    """``[not.]op.value`` after the column name."""
    negated = False
    if text.startswith("not."):
        negated = True
        text = text[4:]
    op, dot, value = text.partition(".")
    if not dot:
        raise _bad("failed to parse filter", f"{column}={text[:80]}")
    language = None
    fts = _FTS_OP.match(op)
    if fts:
        op, language = fts.group(1), fts["lang"]
    if op not in FILTER_OPERATORS:
        raise _bad(f"unknown operator {op[:40]!r}", f"{column}={text[:80]}")
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise _bad("in. needs a list in parentheses", f"{column}=in.{value[:80]}")
        inner = value[1:-1]
        items = [] if inner == "" else [_unquote(v) for v in split_top_level(inner)]
        return Condition(column, op, items, negated)
    if in_logic:
        value = _unquote(value)
    return Condition(column, op, value, negated, language)


def parse_filter_param(column: str, text: str) -> Condition:
    """A ``column=[not.]op.value`` query parameter. Raises ApiError 400 on bad syntax."""
    return _parse_op_value(column, text, in_logic=False)


def _parse_logic_items(text: str, depth: int) -> list[Condition | Logic]:
    if depth > _MAX_DEPTH:
        raise _bad("logic tree nested too deep")
    if not (text.startswith("(") and text.endswith(")")):
        raise _bad("logic operator needs a list in parentheses", text[:80])
    children: list[Condition | Logic] = []
    for raw in split_top_level(text[1:-1]):
        item = raw.strip()
        negated = item.startswith("not.")
        body = item[4:] if negated else item
        head = re.match(r"^(and|or)\(", body)
        if head:
            children.append(
                Logic(head.group(1), _parse_logic_items(body[len(head.group(1)) :], depth + 1),
                      negated)
            )  # fmt: skip
            continue
        column, dot, rest = body.partition(".")
        if not dot or not column:
            raise _bad("failed to parse logic tree", item[:80])
        children.append(_parse_op_value(column, rest, in_logic=True))
    return children


def parse_logic_param(key: str, text: str) -> Logic:
    """``or=(...)``, ``and=(...)``, ``not.or=(...)``. Raises ApiError 400 on bad syntax."""
    negated = key.startswith("not.")
    op = key[4:] if negated else key
    return Logic(op, _parse_logic_items(text, 1), negated)


def parse_order(text: str | None) -> list[OrderTerm]:
    """The terms of ``order=``. Raises ApiError 400 on bad syntax."""
    if not text:
        return []
    terms: list[OrderTerm] = []
    for raw in split_top_level(text):
        parts = raw.strip().split(".")
        column, modifiers = parts[0], parts[1:]
        descending = False
        nulls: str | None = None
        for mod in modifiers:
            if mod in ("asc", "desc"):
                descending = mod == "desc"
            elif mod in ("nullsfirst", "nullslast"):
                nulls = mod[5:]
            else:
                raise _bad("failed to parse order", raw[:80])
        if not column:
            raise _bad("failed to parse order", raw[:80])
        terms.append(OrderTerm(column, descending, nulls))
    return terms


def parse_int(name: str, text: str | None) -> int | None:
    """A non-negative integer query parameter, or None. Raises ApiError 400."""
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 12:
        raise _bad(f"{name} must be a non-negative integer", text[:40])
    return int(text)


def parse_range_header(text: str | None) -> tuple[int, int | None] | None:
    """``Range: 0-49`` -> (offset 0, limit 50); ``10-`` -> (10, None). None when absent.

    Raises ApiError 416 when the range is malformed or inverted.
    """
    if not text:
        return None
    match = re.fullmatch(r"\s*(?:items=)?(\d{1,12})-(\d{0,12})\s*", text)
    if not match:
        raise rest_error(416, "PGRST103", "Requested range not satisfiable", details=text[:80])
    start = int(match.group(1))
    if match.group(2) == "":
        return start, None
    end = int(match.group(2))
    if end < start:
        raise rest_error(416, "PGRST103", "Requested range not satisfiable", details=text[:80])
    return start, end - start + 1


def parse_prefer(values: list[str]) -> Prefer:
    """The ``Prefer`` header(s): return=, count=, resolution= (others are ignored)."""
    prefer = Prefer()
    for header in values:
        for raw in header.split(","):
            key, _, value = raw.strip().partition("=")
            if key == "return" and value in ("minimal", "representation", "headers-only"):
                prefer.return_ = value
            elif key == "count" and value in ("exact", "planned", "estimated"):
                prefer.count = value
            elif key == "resolution" and value in ("merge-duplicates", "ignore-duplicates"):
                prefer.resolution = value
    return prefer
