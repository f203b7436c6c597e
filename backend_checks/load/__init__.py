"""Load: the story's 100 and 1000 concurrent users, through Locust, in a process of its own.

:func:`run_load` (SQL, as PostgREST runs it), :func:`run_rest_load` and
:func:`run_reference_load` (HTTP, as supabase-js sends it) drive the steps from this
(gevent-free) process; the users run in ``python -m backend_checks.load.worker``
subprocesses; :func:`import_results` reads the merged results of Locust masters run
elsewhere; :func:`load_checks` turns a :class:`LoadRun` into the ``load_100`` /
``load_1000`` checks and their series. :class:`LoadRequest` is ``devicelab backend
load``'s command line, checked in one step into the :class:`LoadJob` that runs it.
Importing this package never imports Locust or gevent.
"""

from __future__ import annotations

from backend_checks.load.api import RestApi, run_reference_load, run_rest_load, write_rest_spec
from backend_checks.load.imported import import_results
from backend_checks.load.job import LoadJob, LoadOutcome, LoadRequest
from backend_checks.load.models import Criterion, StepResult
from backend_checks.load.runner import LoadOptions, LoadRun, run_load, write_spec
from backend_checks.load.verdict import SupportRules, judge_step, load_checks, to_results

__all__ = [
    "Criterion",
    "LoadJob",
    "LoadOptions",
    "LoadOutcome",
    "LoadRequest",
    "LoadRun",
    "RestApi",
    "StepResult",
    "SupportRules",
    "import_results",
    "judge_step",
    "load_checks",
    "run_load",
    "run_reference_load",
    "run_rest_load",
    "to_results",
    "write_rest_spec",
    "write_spec",
]
