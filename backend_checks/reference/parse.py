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
    "LEVEL_PARAMS",
    "ROOT_PARAMS",
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
    "split_path",
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

#: Parameters of the top level alone.
ROOT_PARAMS = frozenset({"select", "columns", "on_conflict"})
#: Parameters of the level their dotted prefix names: ``order`` for the top level,
#: ``messages.order`` for the embedded ``messages`` (PostgREST's ``reservedEmbeddable``).
LEVEL_PARAMS = frozenset({"order", "limit", "offset", "and", "or"})

#: Guards against requests built to exhaust the parser.
_MAX_DEPTH = 8
_MAX_ITEMS = 200

_IDENT = r"[^\s,.:()!\"'\\;]+"
#: A column as ``select=`` and ``order=`` name it: bare, or double-quoted (a name with
#: spaces, dots or commas: ``"display name"``), either followed by a JSON path.
_FIELD = rf'(?:"[^"]+"(?:->{_IDENT})?|{_IDENT})'
_SELECT_ITEM = re.compile(
    rf'^(?:(?P<alias>"[^"]+"|{_IDENT}):)?(?P<name>\*|{_FIELD})(?:::(?P<cast>\w+))?$'
)
#: ``alias:rel!hint!inner(...)`` or ``...rel!hint(...)`` (the two ``!`` parts in either order).
_EMBED_ITEM = re.compile(
    rf"^(?:(?P<alias>{_IDENT}):)?(?P<spread>\.\.\.)?(?P<name>{_IDENT})"
    rf"(?P<params>(?:!{_IDENT}){{0,2}})\((?P<inner>.*)\)$",
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
    """One entry of ``select=``: a column (or ``*``, or a JSON path ``col->a->>b``), an
    optional alias and cast; or an embedded relation (``embed`` holds its own select list,
    empty for ``rel()``; ``hint`` the FK or column)."""

    name: str
    alias: str | None = None
    cast: str | None = None
    embed: tuple[SelectItem, ...] | None = None
    hint: str | None = None
    #: ``"inner"`` for ``rel!inner(...)``, ``"left"`` for ``rel!left(...)``, else None.
    join: str | None = None
    #: True for a spread embed, ``...rel(...)``: its columns join the parent's.
    spread: bool = False

    @property
    def key(self) -> str:
        """The name a filter or an ``is.null`` test uses for this embed (alias, else name)."""
        return self.alias or self.name


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
    #: The embedded to-one resource of ``order=rel(col)``, else None.
    relation: str | None = None


@dataclass
class Prefer:
    """The parts of the ``Prefer`` header we act on."""

    return_: str = "minimal"
    count: str | None = None
    resolution: str | None = None
    #: "default": columns a row of an insert lacks get their defaults, not NULL.
    missing: str | None = None


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


def _field(text: str) -> str:
    """A column as written (``_FIELD``) -> its name: ``"display name"->>x`` ->
    ``display name->>x``."""
    if not text.startswith('"'):
        return text
    close = text.index('"', 1)
    return text[1:close] + text[close + 1 :]


def _embed_params(params: str, part: str) -> tuple[str | None, str | None]:
    """``!hint!inner`` (either order, each optional) -> (hint, join)."""
    hint: str | None = None
    join: str | None = None
    for param in params.split("!")[1:]:
        if param in ("inner", "left") and join is None:
            join = param
        elif hint is None:
            hint = param
        else:
            raise _bad("failed to parse select parameter", f"select item {part[:80]!r}")
    return hint, join


def parse_select(text: str | None, *, depth: int = 0) -> list[SelectItem]:
    """The items of ``select=`` (``*`` when absent or empty at the top level; an embed's
    empty list, ``rel()``, stays empty).

    Raises ApiError 400 on bad syntax (PGRST100) and on aggregates (PGRST123).

    Embedded relations (``alias:rel!hint!inner(cols)``, ``...rel(cols)``) nest; columns
    may be JSON paths (``data->a->>b``), checked against the catalog in ``query.py``.
    """
    if depth == 0 and (text is None or text.strip() == ""):
        return [SelectItem("*")]
    if depth > _MAX_DEPTH:
        raise _bad("select nested too deep")
    if text is None or text.strip() == "":
        return []
    items: list[SelectItem] = []
    for raw in split_top_level(text):
        part = raw.strip()
        if _AGGREGATE_ITEM.match(part):
            # Supabase runs PostgREST with db-aggregates-enabled off (its default).
            raise rest_error(400, "PGRST123", "Use of aggregate functions is not allowed")
        if "(" in part:
            embed = _EMBED_ITEM.match(part)
            if not embed or (embed["spread"] and embed["alias"]):
                raise _bad("failed to parse select parameter", f"select item {part[:80]!r}")
            hint, join = _embed_params(embed["params"], part)
            inner = parse_select(embed["inner"], depth=depth + 1)
            items.append(
                SelectItem(embed["name"], embed["alias"], None, tuple(inner), hint, join,
                           bool(embed["spread"]))
            )  # fmt: skip
            continue
        match = _SELECT_ITEM.match(part)
        if not match:
            raise _bad("failed to parse select parameter", f"select item {part[:80]!r}")
        alias = _unquote(match["alias"]) if match["alias"] else None
        items.append(SelectItem(_field(match["name"]), alias, match["cast"]))
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


_RELATED_ORDER = re.compile(rf"^(?P<rel>{_IDENT})\((?P<col>[^()]+)\)$")


def parse_order(text: str | None) -> list[OrderTerm]:
    """The terms of ``order=``: ``col``, ``col->key`` or ``rel(col)``, each with
    ``.asc|.desc`` and ``.nullsfirst|.nullslast``. Raises ApiError 400 on bad syntax."""
    if not text:
        return []
    terms: list[OrderTerm] = []
    for raw in split_top_level(text):
        parts = split_top_level(raw.strip(), ".")
        column, modifiers = _field(parts[0]), parts[1:]
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
        related = _RELATED_ORDER.match(column)
        if related:
            terms.append(OrderTerm(related["col"], descending, nulls, related["rel"]))
        else:
            terms.append(OrderTerm(column, descending, nulls))
    return terms


def split_path(key: str) -> tuple[tuple[str, ...], str]:
    """A query parameter's name split into the embed path and the last name:
    ``profiles.username`` -> (("profiles",), "username"), ``a.b.data->>x`` ->
    (("a", "b"), "data->>x"). A JSON path ends the name, so its keys keep their dots.

    Raises ApiError 400 (PGRST100) on an empty part (``a..b``, ``.x``).
    """
    arrow = key.find("->")
    head, tail = (key, "") if arrow < 0 else (key[:arrow], key[arrow:])
    parts = [_unquote(part) for part in split_top_level(head, ".")]
    if any(not part for part in parts):
        raise _bad("failed to parse tree path", key[:80])
    return tuple(parts[:-1]), parts[-1] + tail


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
    """The ``Prefer`` header(s): return=, count=, resolution=, missing= (others are
    ignored)."""
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
            elif key == "missing" and value in ("default", "null"):
                prefer.missing = value
    return prefer
