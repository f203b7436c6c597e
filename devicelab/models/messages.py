"""pydantic's validation messages in devicelab's words, for the one-line errors of config
files, network profiles and ``LabSession.measure`` options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["explain", "plain"]

_VALUE_ERROR = "Value error, "
_INPUT_SHOULD_BE = "Input should be "


def plain(message: str) -> str:
    """``Input should be a valid integer`` -> ``expected a valid integer``; a validator's
    own ``Value error, ...`` prefix dropped. Other messages are returned unchanged."""
    message = message.removeprefix(_VALUE_ERROR)
    if message.startswith(_INPUT_SHOULD_BE):
        return "expected " + message.removeprefix(_INPUT_SHOULD_BE)
    return message


def explain(error: Mapping[str, Any]) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as :func:`plain` words,
    with ``, found <input>`` when pydantic said what the input should have been: ``expected
    greater than or equal to 1, found 0``. A validator's own message already says it."""
    said = str(error["msg"])
    message = plain(said)
    if said.startswith(_INPUT_SHOULD_BE) and "input" in error:
        message += f", found {error['input']!r}"
    return message
