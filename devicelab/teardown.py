"""The reverse-order stop list of a run: each peer pushes how to stop it once started.

Lifecycle: ``push(what, step)`` as each peer starts; ``run()`` calls the steps newest
first. A step that fails (or is interrupted) is logged and reported through ``say``, and
the others still run: teardown never raises past the others (a Ctrl-C is raised again
once all of them ran).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from devicelab.errors import first_line

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
        """Run every step, newest first. A failing step is logged and the others run;
        raises nothing but KeyboardInterrupt, after every step ran, when a Ctrl-C (or a
        SIGTERM) came during teardown: the command still ends as interrupted (130/143),
        not as if it had finished."""
        interrupted: KeyboardInterrupt | None = None
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except KeyboardInterrupt as exc:  # the others still run; raised after them
                interrupted = interrupted or exc
                logger.warning("stopping the %s was interrupted", what)
                self._say(f"warning: stopping the {what} was interrupted")
            except Exception as exc:  # teardown goes on regardless
                why = first_line(exc)
                logger.warning("stopping the %s failed: %s", what, why)
                self._say(f"warning: stopping the {what} failed: {why}")
        if interrupted is not None:
            raise interrupted
