"""Number fields of the lab files: finite, and never a YAML boolean.

YAML 1.1 reads ``yes``/``no``/``on``/``off`` as booleans and ``.inf``/``.nan`` as floats;
pydantic's lax mode then takes True for 1 and infinity for a number. A bandwidth of
``.inf`` overflowed the proxy's self-check, ``rtt_ms: yes`` shaped a 1 ms link, and
``rtt_ms: .inf`` ran unshaped: the lab files' numbers are these types instead.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AllowInfNan, BeforeValidator

__all__ = ["FiniteFloat", "WholeNumber", "meets", "plain_number"]


def plain_number(value: Any) -> Any:
    """Returns ``value`` unchanged unless it is a boolean or a float that is no finite
    number. Raises ValueError for one: a boolean (the YAML words yes/no/true/false/on/off)
    pydantic would take as 1 or 0; inf or nan, before a bound says "less than" of it."""
    if isinstance(value, bool):
        raise ValueError(
            f"expected a number, found {str(value).lower()} (YAML reads yes/no/on/off/true/"
            "false as a boolean)"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, found {value}")
    return value


#: A finite float (no inf, no nan), never a boolean.
FiniteFloat = Annotated[float, BeforeValidator(plain_number), AllowInfNan(False)]
#: An int, never a boolean.
WholeNumber = Annotated[int, BeforeValidator(plain_number)]


def meets(measured: float, op: str, bound: float) -> bool:
    """Whether ``measured <op> bound`` holds, for a target's op (``<``, ``<=``, ``>``,
    ``>=``, ``==``). Raises KeyError for another op."""
    return {
        "<": measured < bound,
        "<=": measured <= bound,
        ">": measured > bound,
        ">=": measured >= bound,
        "==": measured == bound,
    }[op]
