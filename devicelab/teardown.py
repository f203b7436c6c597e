"""The reverse-order stop list of a run: each peer pushes how to stop it once started.

Lifecycle: ``push(what, step)`` as each peer starts; ``run()`` calls the steps newest
first. A step that fails (or is interrupted) is logged and reported through ``say``, and
the others still run: teardown never raises past the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["Teardown"]

logger = logging.getLogger("devicelab.lab")


class Teardown:
    """Stop steps, run newest first; each failure is logged and the others still run."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []
        self._say = say

    def push(self, what: str, step: Callable[[], object]) -> None:
        """Add ``step`` (what stops ``what``); it runs before the steps pushed earlier."""
        self._steps.append((what, step))

    def run(self) -> None:
        """Run every step, newest first; never raises."""
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except (Exception, KeyboardInterrupt) as exc:  # teardown goes on regardless
                logger.warning("stopping the %s failed: %s", what, exc)
                self._say(f"warning: stopping the {what} failed: {exc}")
