"""Load: the story's 100 and 1000 concurrent users, through Locust, in a process of its own.

:func:`run_load` drives the steps from this (gevent-free) process; the users run in
``python -m backend_checks.load.worker`` subprocesses; :func:`load_checks` turns a
:class:`LoadRun` into the ``load_100`` / ``load_1000`` checks and their series.
Importing this package never imports Locust or gevent.
"""

from __future__ import annotations

from backend_checks.load.models import Criterion, StepResult
from backend_checks.load.runner import LoadOptions, LoadRun, run_load, write_spec
from backend_checks.load.verdict import SupportRules, judge_step, load_checks, to_results

__all__ = [
    "Criterion",
    "LoadOptions",
    "LoadRun",
    "StepResult",
    "SupportRules",
    "judge_step",
    "load_checks",
    "run_load",
    "to_results",
    "write_spec",
]
