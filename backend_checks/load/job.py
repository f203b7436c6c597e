"""One ``devicelab backend load``: its options, checked together, and its run.

:class:`LoadRequest` is the command line as parsed values; :meth:`LoadRequest.prepare`
checks them together in one step (before anything is made or asked: bad input must not
wait for minutes of load) and returns the :class:`LoadJob`; :meth:`LoadJob.run` picks the
target (SQL on a DSN or the managed cluster; HTTP on a Supabase URL or on our reference
server; or the results of Locust masters to import), runs, judges, writes ``out`` and
returns the :class:`LoadOutcome` the command prints. A run that stops early (its server
went away, Ctrl-C, SIGTERM) still writes what it measured, marked unfinished.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend_checks.load.runner import LoadOptions, LoadProgress, LoadRun
from devicelab.errors import BadInput, DeviceLabError

if TYPE_CHECKING:
    from backend_checks.backend_info import BackendKind
    from devicelab.models import Results, TargetBook

__all__ = ["DEFAULT_WINDOW_S", "STORY_USERS", "LoadJob", "LoadOutcome", "LoadRequest"]

#: The story's steps, when ``--users`` is not given.
STORY_USERS = (100, 1000)
#: A step's measurement window when ``--duration`` is not given.
DEFAULT_WINDOW_S = 60.0

#: Where a job says what the user must see at once (stderr): warnings, seeding, the
#: unfinished results written.
Say = Callable[[str], None]


class LoadRequest(BaseModel):
    """``devicelab backend load`` as given: each option parsed, not yet checked against the
    others. None means "not given" (``users``: the story's steps; ``duration_s``: 60 s a
    step, or the imported files' own). The secrets never appear in its repr."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: list[int] | None = None
    duration_s: float | None = None
    mix: str = "full"
    closed: bool = False
    rate: float | None = None
    per_user_rate: float = 0.2
    processes: int | None = None
    allow_writes: bool = False
    dsn: str | None = Field(default=None, repr=False)
    url: str | None = None
    #: ``url`` came from SUPABASE_URL, not the command line: it yields to another target.
    url_from_env: bool = False
    anon_key: str | None = Field(default=None, repr=False)
    test_password: str | None = Field(default=None, repr=False)
    accounts: int | None = None
    reference: bool = False
    imports: list[Path] = Field(default_factory=list)
    out: Path | None = None

    def prepare(self) -> LoadJob:
        """The job, its options checked together, the targets read and ``out`` proven
        writable. Raises BadInput naming the bad option or the clash, ConfigError for the
        targets file."""
        from devicelab import config

        request = self
        if self._env_url_yields():
            request = self.model_copy(update={"url": None})
        options = request._options()
        if request.url is not None and not (request.reference or request.imports):
            from backend_checks.load.api import check_url

            check_url(request.url)  # malformed: bad input before anything is made or asked
        targets = config.load_targets()
        if request.out is not None:
            from devicelab.records import check_writable

            check_writable(request.out)
        request._check_target()
        return LoadJob(request=request, options=options, targets=targets)

    def _env_url_yields(self) -> bool:
        """SUPABASE_URL from the environment applies only when no other target is named."""
        other = self.dsn is not None or self.reference or bool(self.imports)
        return self.url is not None and self.url_from_env and other

    def _options(self) -> LoadOptions:
        """LoadOptions of the request. Raises BadInput naming the bad option."""
        if self.closed and self.rate is not None:
            raise BadInput("--closed sends back to back: --rate does not apply", hint="drop one")
        try:
            return LoadOptions(
                users=list(STORY_USERS) if self.users is None else self.users,
                duration_s=DEFAULT_WINDOW_S if self.duration_s is None else self.duration_s,
                mix=self.mix,
                closed=self.closed,
                rate=self.rate,
                per_user_rate=self.per_user_rate,
                processes=self.processes,
                allow_writes=self.allow_writes,
            )
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(str(p) for p in problem["loc"]).replace("_", "-")
            raise BadInput(f"bad --{field}: {problem['msg']}", hint="see --help") from None

    def _check_target(self) -> None:
        """Raises BadInput when the options name targets that exclude each other."""
        if self.imports:
            if (
                self.url is not None
                or self.reference
                or self.dsn is not None
                or self.users is not None
            ):
                raise BadInput(
                    "--import judges runs that are over: drop --url, --reference, --dsn"
                    " and --users (the files say how many users ran)",
                    hint="devicelab backend load --import merged.json --out DIR",
                )
        elif self.reference:
            if self.url is not None:
                raise BadInput("--reference serves its own API: drop --url", hint="one target")
        elif self.url is not None:
            if self.accounts is not None and self.dsn is not None:
                raise BadInput("--accounts is for --url without --dsn", hint="drop one of them")
            if not self.anon_key:
                raise BadInput(
                    "--url needs the API's anon key", hint="give --anon-key or SUPABASE_ANON_KEY"
                )


@dataclass(frozen=True)
class LoadOutcome:
    """What a finished load measured (``run``) and its judged checks (``results``)."""

    run: LoadRun
    results: Results


@dataclass(frozen=True)
class LoadJob:
    """A checked :class:`LoadRequest`, ready to run (:meth:`LoadRequest.prepare` makes it)."""

    request: LoadRequest
    options: LoadOptions
    targets: TargetBook

    def run(self, say: Say) -> LoadOutcome:
        """Load the target, judge the steps and write results.json and the reports to
        ``out`` (first: a closed stdout must not lose minutes of load); each step's start
        and end are logged to stderr as they happen. Returns the outcome. Raises what the
        run raises (BackendUnavailable, UnsafeActionRefused, BadInput for unreadable
        imports, KeyboardInterrupt), after writing what it measured, marked unfinished."""
        from backend_checks.load.verdict import to_results

        _show_progress()
        request = self.request
        progress = LoadProgress()
        kind: BackendKind = "reference" if request.reference else "postgres"
        if request.imports:
            from backend_checks.load.imported import import_results

            run = import_results(
                list(request.imports), duration_s=request.duration_s, options=self.options
            )
            kind = "supabase" if run.steps[0].transport == "rest" else "postgres"
        elif request.reference or request.url is not None:
            kind = "reference" if request.reference else "supabase"
            with self._unfinished_written(progress, kind, say):
                run = self._http(progress)
        else:
            from backend_checks.load import run_load

            with self._unfinished_written(progress, kind, say):
                target, writes = self._target(say)
                run = run_load(target, writes, progress=progress)
        results = to_results(run, self.targets, backend_kind=kind)
        if request.out is not None:
            from devicelab import report

            report.write_all(results, request.out, self.targets)
        return LoadOutcome(run=run, results=results)

    def _http(self, progress: LoadProgress) -> LoadRun:
        """The HTTP load: on the reference server, or on the API at ``url``."""
        from backend_checks.load.api import (
            DEFAULT_PASSWORD,
            RestApi,
            run_reference_load,
            run_rest_load,
        )

        request = self.request
        if request.reference:
            return run_reference_load(self.options, dsn=request.dsn, progress=progress)
        assert request.url is not None and request.anon_key  # _check_target
        api = RestApi(
            url=request.url,
            anon_key=request.anon_key,
            password=request.test_password or DEFAULT_PASSWORD,
            accounts=request.accounts,
        )
        return run_rest_load(api, self.options, dsn=request.dsn, progress=progress)

    def _target(self, say: Say) -> tuple[str, LoadOptions]:
        """The DSN to load and the options to load it with: the managed cluster is
        devicelab's own scratch database, and so is one holding only a `backend datagen`
        data set, so the full mix may write there without the flag. Raises
        UnsafeActionRefused when the role cannot tell whether the data is ours and the mix
        writes (load.runner.scratch_writes)."""
        dsn, options = self.request.dsn, self.options
        if dsn is not None:
            from backend_checks.check_load import connection_room
            from backend_checks.load.runner import scratch_writes

            writes = scratch_writes(dsn, options)
            room = connection_room(dsn)
            free = room.free if room is not None else None
            for users in options.users:
                if free is not None and users > free:
                    # Said before the sessions open (a hosted database's direct-connection
                    # cap): the step will meet the limit; exhaustion is measured and judged.
                    say(
                        f"devicelab: warning: {users} SQL sessions exceed the {free}"
                        " connections the server has free for this role; the step will"
                        " meet its limit (load through the API instead: --url)"
                    )
            return dsn, writes
        from backend_checks.reference.serve import prepare_database

        # Seeded with the story's data set when empty, as `backend check` and `run` seed it.
        dsn = prepare_database(None, say=say)
        return dsn, options.model_copy(update={"allow_writes": True})

    @contextlib.contextmanager
    def _unfinished_written(
        self, progress: LoadProgress, kind: BackendKind, say: Say
    ) -> Iterator[None]:
        """When the run stops early (its server went away, Ctrl-C, SIGTERM), what it
        measured until then goes to ``out``, marked unfinished; the error stays the
        command's outcome (exit 3, 130, 143)."""
        try:
            yield
        except (DeviceLabError, KeyboardInterrupt):
            if self.request.out is not None:
                self._write_unfinished(progress, self.request.out, kind, say)
            raise

    def _write_unfinished(
        self, progress: LoadProgress, out: Path, kind: BackendKind, say: Say
    ) -> None:
        """Write what a run that stopped early measured to ``out`` (results.json with
        ``finished_at`` null, and the reports), as ``devicelab run`` does for a stopped
        run, and say so through ``say`` (its own message: RunRecord.stopped only logs).
        Nothing when the run had not started; never raises (the stop is what counts)."""
        from backend_checks.load.verdict import to_results
        from devicelab import report
        from devicelab.models import Results

        run = progress.run()
        if run is None:
            return
        try:
            results = to_results(run, self.targets, backend_kind=kind)
            if not run.steps:  # no step measured: no verdict, not "skipped: no step ran"
                results = Results(run=results.run)
            results = Results(
                run=results.run.model_copy(update={"finished_at": None}),
                checks=results.checks,
                series=results.series,
            )
            report.write_all(results, out, self.targets)
            say(f"wrote {out}/results.json (unfinished)")
        except Exception as exc:  # the reason the run stopped is the error to report
            say(f"devicelab: could not write {out}: {exc}")


def _show_progress() -> None:
    """Each step's start and end on stderr as they happen: a run is minutes long, and a
    Ctrl-C in its last step should not leave the finished ones unseen."""
    progress = logging.getLogger("backend_checks.load.runner")
    if not progress.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("load: %(message)s"))
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)
