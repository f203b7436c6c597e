"""The reverse-order stop list of a run: each peer pushes how to stop it once started.

Lifecycle: ``push(what, step)`` as each peer starts; ``run()`` calls the steps newest
first. A step that fails (or is interrupted) is logged and reported through ``say``, and
the others still run: teardown never raises past the others (a Ctrl-C is raised again
once all of them ran). A step that puts a device back holds a Ctrl-C until it is done
(devicelab.journal.held_interrupts): that step finished, and is not reported as
interrupted. A ``say`` that fails (stderr a closed pipe or a hung-up terminal: EPIPE,
EIO) is logged and passed over: telling is never a reason to leave a phone routed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

# DeviceLeftChanged lives in the error tree; named here too, where it was defined first.
from devicelab.errors import DeviceLeftChanged, EnvironmentProblem, first_line
from devicelab.journal import HeldInterrupt, Journal, describe

__all__ = ["DeviceLeftChanged", "Teardown", "left_changed"]

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
        SIGTERM, SIGHUP) came during teardown: the command still ends as interrupted
        (130/143/129), not as if it had finished. A failing ``say`` is passed over."""
        interrupted: KeyboardInterrupt | None = None
        while self._steps:
            what, step = self._steps.pop()
            # Said once, through ``say`` (which logs when there is no console); a warning
            # logged as well printed every line twice on the console.
            try:
                step()
            except HeldInterrupt as exc:  # the step finished first
                interrupted = interrupted or exc
                logger.debug("a Ctrl-C came while stopping the %s; it finished first", what)
            except KeyboardInterrupt as exc:  # the others still run; raised after them
                interrupted = interrupted or exc
                self._tell(f"warning: stopping the {what} was interrupted")
            except Exception as exc:  # teardown goes on regardless
                why = first_line(exc)
                logger.debug("stopping the %s failed", what, exc_info=True)
                self._tell(f"warning: stopping the {what} failed: {why}")
        if interrupted is not None:
            raise interrupted

    def _tell(self, text: str) -> None:
        """``say`` ``text``; never raises: telling must not stop the restoring."""
        try:
            self._say(text)
        except Exception:  # a reader that went away (EPIPE), a closed terminal (EIO)
            logger.debug("could not say %r", text, exc_info=True)


def left_changed(since: float) -> DeviceLeftChanged | None:
    """What this process changed on devices since ``since`` (time.time()) and could not
    undo, as the error that says so (devices, changes, how they will be undone); None
    when nothing is left. Never raises: a journal that cannot be read is logged."""
    journal = Journal()
    try:
        left = journal.left_by_this_process(since)
    except EnvironmentProblem as exc:
        logger.warning("could not read the journal to check what is left: %s", exc.one_line())
        return None
    if not left:
        return None
    targets = dict.fromkeys(entry.target for entry in left)
    changed = "; ".join(
        f"{target} was left changed: {describe([e for e in left if e.target == target])}"
        for target in targets
    )
    return DeviceLeftChanged(
        changed,
        hint=f"the next devicelab run on it puts that back (pending in {journal.path}); "
        "`devicelab devices` lists it meanwhile",
    )
