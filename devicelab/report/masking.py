"""Secret masking for the reports: the second fence after the producers' own redaction.

``mask_secrets`` walks evidence (dicts, lists, scalars) and masks the values of secret
keys and, in any text, JWTs, DSN passwords, name=value and ``name: value`` secrets, SQL
password literals, Supabase secret keys and Bearer credentials; ``showable`` replaces
what no report may carry. Pure and linear in the text's length.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from devicelab.models import Results

__all__ = ["MASK", "is_secret_key", "mask_secrets", "redacted", "showable"]

MASK = "***"

#: Key words that mark a secret. Producers redact already; this is the second fence.
#: Matched against the words of a key (split on _ - . and camelCase), so "anon_key",
#: "apiKey", "Authorization" and "db_password" are masked but "keyboard" is not.
#: "key" alone is a secret unless a word of _NOT_A_SECRET_KEY says what kind of key it is.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "token",
        "secret",
        "key",
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "jwt",
        "bearer",
    }
)
#: Keys of a plan or a table, never secrets: "sort_key" (a Sort node's columns, which the
#: index suggestions rest on), "Hash Key", "primary_key", "partition key".
_NOT_A_SECRET_KEY = frozenset(
    {
        "sort",
        "presorted",
        "hash",
        "group",
        "merge",
        "join",
        "primary",
        "foreign",
        "partition",
        "index",
        "unique",
        "cache",
        "distinct",
        "order",
        "row",
        "column",
        "columns",
    }
)
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
#: A JWT (header.payload.signature, base64url) anywhere in a string: Supabase keys are JWTs.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
#: The password part of scheme://user:password@host, to the last '@' before a '/' (a
#: password with an unescaped '@' is hidden whole). A scheme starts only where no scheme
#: character precedes it: without that look-behind every position of a long hex string
#: started a scan to its end (quadratic: 100 KB of evidence took seconds).
_URL_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<head>[A-Za-z][A-Za-z0-9+.-]*+://[^/\s:@]*+:)[^/\s]+@"
)
#: A secret given as name=value: a DSN's ``password=...`` (or quoted), an environment
#: line (``PGPASSWORD=``, ``SUPABASE_SERVICE_ROLE_KEY=``, ``service_role_key=``). Every
#: ``name=`` is found (a name taken whole, never backtracked into) and the name decides;
#: a name that is no secret's leaves its value to be scanned too (``--env=PGPASSWORD=x``).
_KV_NAME = re.compile(r"(?<![A-Za-z0-9_])([A-Za-z_][A-Za-z0-9_]*+)\s*=\s*")
#: The value after a secret's name: quoted ('...' or "..."), else up to a space or ``&``
#: (a password's ``;`` and ``,`` included; an unclosed quote to the next space).
_KV_VALUE = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&]+")
_SECRET_NAME = re.compile(
    r"password|passwd|pwd|secret|token|api_?key|role_key|anon_key|(?:^|_)key$", re.I
)
_QUERY_PASSWORD = re.compile(
    r"(?P<head>[?&](?:password|apikey|api_key|access_token|refresh_token|token|key|secret"
    r"|signature)=)[^&\s'\"]*",
    re.I,
)
#: A bearer credential as an ``Authorization`` header carries it (a Supabase access token
#: or a personal access token, sbp_...; the scheme's case is free), of any length: a
#: token has a digit, one of ``._-`` inside it, or a capital after a small letter (the
#: word in "requires a Bearer token." is left alone, full stop and all; "Bearer Sekr9tI"
#: is not).
_BEARER = re.compile(
    r"(?P<head>\bbearer\s+)"
    r"(?=[A-Za-z0-9._~+/=-]*?(?:[0-9]|[._-](?=[A-Za-z0-9])|(?-i:[a-z][A-Z])))"
    r"[A-Za-z0-9._~+/=-]+",
    re.I,
)
#: Supabase's secret API keys (``sb_secret_...``); ``sb_publishable_...`` keys are public.
_SB_SECRET = re.compile(r"(?<![A-Za-z0-9_])sb_secret_[A-Za-z0-9_-]++")
#: A secret given as ``name: value`` (YAML, a log line) or in a dict's repr or JSON
#: (``'password': 'x'``, ``"token": "x"``): the name is taken whole, quoted or not, and
#: decides; the value is quoted or runs to a space, a comma or a closing bracket.
_COLON_NAME = re.compile(r"(?<![A-Za-z0-9_])(['\"]?)([A-Za-z_][A-Za-z0-9_]*+)\1[ \t]*+:[ \t]*+")
_COLON_SECRET = re.compile(
    r"(?:[a-z0-9]*_)?(?:password|passwd|pwd|secret|token|api_?key|role_key|anon_key)", re.I
)
_COLON_VALUE = re.compile(r"'(?:[^'\\]|\\.)*+'|\"(?:[^\"\\]|\\.)*+\"|[^\s,}\]]++")
#: A statement's password literal (CREATE or ALTER ROLE ... PASSWORD, a user mapping's
#: OPTIONS (password ...)) in any of PostgreSQL's quotings: '...', E'...', $$...$$,
#: $tag$...$tag$. A quote before the keyword makes it a literal's text, not the keyword.
_SQL_PASSWORD = re.compile(r"(?i)(?<!['\"])\bpassword\s*+")
_SQL_QUOTED = re.compile(r"(?:[eE](?='))?'(?:[^'\\]++|''|\\.?)*+(?:'|\Z)")
_SQL_DOLLAR = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*+)?\$")
#: What no report may carry, shown as U+FFFD: C0 controls but tab and newline, DEL, the
#: C1 block (\x9b is a terminal's CSI: ``devicelab report`` prints to terminals), lone
#: surrogates (no UTF-8 encoder takes them) and the non-characters.
_UNSHOWABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
#: How deep evidence is walked; deeper parts are named, not shown (a 2,000-deep list
#: would exhaust the interpreter's stack, and no reader follows 40 levels anyway).
_MAX_DEPTH = 40
#: Integers beyond this many bits are shown by their size: Python refuses to write
#: one of more than 4,300 digits as text.
_MAX_INT_BITS = 4000


def is_secret_key(key: str) -> bool:
    """Whether an evidence key names a secret (its value is then never printed)."""
    words = {word.lower() for word in _WORD_SPLIT.split(key) if word}
    if words & _NOT_A_SECRET_KEY and words & _SECRET_WORDS == {"key"}:
        words.discard("key")
    return bool(words & _SECRET_WORDS) or "password" in key.lower() or "token" in key.lower()


def showable(text: str) -> str:
    """``text`` with every control character, lone surrogate and non-character replaced
    by U+FFFD (tab and newline kept): safe to print, encode and parse."""
    return _UNSHOWABLE.sub("\ufffd", text)


def _mask_kv(text: str) -> str:
    """``text`` with the value after every secret's ``name=`` masked (linear)."""
    parts: list[str] = []
    done = scan = 0
    while (name := _KV_NAME.search(text, scan)) is not None:
        scan = name.end()
        if not _SECRET_NAME.search(name.group(1)):
            continue
        value = _KV_VALUE.match(text, scan)
        if value is None:
            continue
        parts += [text[done:scan], MASK]
        done = scan = value.end()
    parts.append(text[done:])
    return "".join(parts)


def _mask_colon(text: str) -> str:
    """``text`` with the value after every secret's ``name:`` masked (linear)."""
    parts: list[str] = []
    done = scan = 0
    while (name := _COLON_NAME.search(text, scan)) is not None:
        scan = name.end()
        if not _COLON_SECRET.fullmatch(name.group(2)):
            continue
        value = _COLON_VALUE.match(text, scan)
        if value is None or value.group() in (MASK, f"'{MASK}'", f'"{MASK}"'):
            continue
        quote = value.group()[0] if value.group()[0] in "'\"" else ""
        parts += [text[done:scan], f"{quote}{MASK}{quote}"]
        done = scan = value.end()
    parts.append(text[done:])
    return "".join(parts)


def _mask_sql_password(text: str) -> str:
    """``text`` with the literal after every SQL ``PASSWORD`` masked, however quoted
    (an unclosed one to the end of the text; linear)."""
    parts: list[str] = []
    done = scan = 0
    while (keyword := _SQL_PASSWORD.search(text, scan)) is not None:
        scan = keyword.end()
        if (dollar := _SQL_DOLLAR.match(text, scan)) is not None:
            close = text.find(dollar.group(), dollar.end())
            end = len(text) if close < 0 else close + len(dollar.group())
        elif (quoted := _SQL_QUOTED.match(text, scan)) is not None:
            end = quoted.end()
        else:
            continue
        parts += [text[done:scan], f"'{MASK}'"]
        done = scan = end
    parts.append(text[done:])
    return "".join(parts)


def _mask_text(text: str) -> str:
    text = showable(_JWT.sub(MASK, text))
    text = _QUERY_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _mask_kv(_mask_sql_password(_SB_SECRET.sub(MASK, text)))
    text = _mask_colon(text)
    text = _BEARER.sub(lambda m: m.group("head") + MASK, text)
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)


def mask_secrets(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with the values of secret-looking keys, JWTs, DSN passwords
    (URL, key=value, ``?password=``), secrets as name=value (``PGPASSWORD=``,
    ``?apikey=``, ``&access_token=``, ``service_role_key=``) and Bearer
    credentials replaced by ``***``, and control characters by
    U+FFFD (in keys too). Lists, dicts and scalars are walked, 40 levels deep (deeper
    parts become a note); other objects, and integers too long to write, become text."""
    if isinstance(value, dict | list | tuple) and _depth >= _MAX_DEPTH:
        return f"… (nested deeper than {_MAX_DEPTH} levels)"
    if isinstance(value, dict):
        return {
            _mask_text(str(k)): (
                MASK
                if is_secret_key(str(k)) and v not in (None, "")
                else mask_secrets(v, _depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(item, _depth + 1) for item in value]
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > _MAX_INT_BITS:
            return f"(an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits)"
        return value
    if value is None or isinstance(value, bool | float):
        return value
    return _mask_text(str(value))


def redacted(results: Results) -> Results:
    """A copy of ``results`` with every text masked as :func:`mask_secrets` masks it: ids,
    names, units, sources, reasons and evidence alike, since a producer (or a hand-edited
    file) may have put a secret in any of them. What is not text (numbers, times, lists
    of samples) is shared, not copied. A report renders only this copy."""
    return _redacted_model(results)


def _redacted_model[M: BaseModel](model: M) -> M:
    update: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, str):
            masked: Any = _mask_text(value)
        elif isinstance(value, BaseModel):
            masked = _redacted_model(value)
        elif isinstance(value, dict):
            masked = mask_secrets(value)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            masked = [_redacted_model(item) for item in value]
        else:
            continue
        if masked is not value and masked != value:
            update[name] = masked
    return model.model_copy(update=update) if update else model
