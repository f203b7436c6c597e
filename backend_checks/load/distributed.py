"""Locust master/worker mode across machines: HDR histograms forwarded and merged.

Used only when Locust's own CLI runs the locustfile (``locust -f .../locustfile.py
--master`` / ``--worker``) with ``DEVICELAB_LOAD_SPEC`` naming a WorkerSpec JSON. Each
worker process opens its window when the test starts and adds what it recorded since its
last report to every stats report (``report_to_master``); the master merges the reports
(``worker_report``) and writes one WorkerResult JSON to ``DEVICELAB_LOAD_OUT`` when it
quits, with the run's shape (transport, target, mix, pace, window, workers) so
``devicelab backend load --import`` can judge it elsewhere. Our own local runner
(``backend_checks.load.worker``) does not set the variable, so these hooks stay idle there.

Each user's window opens when the user starts (the ramp is not latency) and ends at the
spec's window or when the master stops it, whichever is first; the result's window is
the users' mean, so a master's ``-t`` shorter than the spec's window is judged on the
time it ran. A worker flags its last report (sent once the test stopped); a worker that
connected or reported but never sent its last one was lost (killed, crashed, cut off) and
is named in the result (``shape.lost_workers``): the step cannot pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from locust import events
from locust.runners import MasterRunner

from backend_checks.load import hdr
from backend_checks.load.models import OpTally, RunShape, SecondTally, WorkerResult, WorkerSpec

__all__ = ["OUT_ENV", "REPORT_KEY", "SPEC_ENV", "Merged", "install"]

SPEC_ENV = "DEVICELAB_LOAD_SPEC"
OUT_ENV = "DEVICELAB_LOAD_OUT"
REPORT_KEY = "devicelab_hdr"


class Merged:
    """The master's sum of its workers' reports."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.started = time.perf_counter()
        self.latency = {name: hdr.new() for name in spec.mix}
        self.service = {name: hdr.new() for name in spec.mix}
        self.counts = {name: [0, 0, 0] for name in spec.mix}
        self.seconds: dict[int, list[Any]] = {}
        self.errors: dict[str, int] = {}
        self.users = self.connected = self.connect_failures = self.exhaustion = 0
        self.missed = 0
        self.workers: set[str] = set()
        self.finished: set[str] = set()
        self.peaks: dict[str, int] = {}
        self.window_s = 0.0
        self.windows = 0
        self.started_at = datetime.now(UTC).isoformat()

    def add(self, report: dict[str, Any], worker: str = "") -> None:
        """Merge one worker report (a ``Recorder.drain()``) from ``worker`` (its id)."""
        self.workers.add(worker)
        if report.get("final"):
            self.finished.add(worker)
        # Each report carries its worker's peak so far; workers peak apart (summed: at most).
        self.peaks[worker] = max(self.peaks.get(worker, 0), int(report.get("peak_connected", 0)))
        self.window_s += float(report.get("user_window_s", 0.0))
        self.windows += int(report.get("user_windows", 0))
        self.connected += int(report["connected"])
        self.connect_failures += int(report["connect_failures"])
        self.exhaustion += int(report["exhaustion"])
        self.missed += int(report.get("missed", 0))
        for key, n in report["errors"].items():
            self.errors[key] = self.errors.get(key, 0) + int(n)
        for name, tally in report["ops"].items():
            for histogram, field in ((self.latency, "latency_hdr"), (self.service, "service_hdr")):
                if tally[field]:
                    histogram[name].decode_and_add(tally[field].encode("ascii"))
            counts = self.counts[name]
            counts[0] += tally["ok"]
            counts[1] += tally["errors"]
            counts[2] += tally["late"]
        for second in report["seconds"]:
            slot = self.seconds.setdefault(second["t"], [0, 0, hdr.new()])
            slot[0] += second["ok"]
            slot[1] += second["errors"]
            if second["latency_hdr"]:
                slot[2].decode_and_add(second["latency_hdr"].encode("ascii"))

    def result(self, users: int) -> WorkerResult:
        """Everything merged, as one WorkerResult."""
        return WorkerResult(
            users=users,
            connected=self.connected,
            peak_connected=sum(self.peaks.values()),
            connect_failures=self.connect_failures,
            exhaustion=self.exhaustion,
            missed=self.missed,
            ops={
                name: OpTally(
                    ok=c[0],
                    errors=c[1],
                    late=c[2],
                    latency_hdr=self.latency[name].encode().decode("ascii"),
                    service_hdr=self.service[name].encode().decode("ascii"),
                )
                for name, c in self.counts.items()
            },
            seconds=[
                SecondTally(t=t, ok=ok, errors=err, latency_hdr=h.encode().decode("ascii"))
                for t, (ok, err, h) in sorted(self.seconds.items())
            ],
            errors=self.errors,
            elapsed_s=time.perf_counter() - self.started,
            shape=self.shape(),
        )

    def window(self) -> float:
        """The window the users were in, as a mean over users (the spec's window when no
        user reported one)."""
        if not self.windows or self.window_s <= 0:
            return self.spec.duration_s
        return round(min(self.spec.duration_s, self.window_s / self.windows), 3)

    def shape(self) -> RunShape:
        """How the run was paced and where it went (no secret: the DSN redacted)."""
        from backend_checks.db import redact

        spec = self.spec
        return RunShape(
            transport="rest" if spec.api_url else "sql",
            target=spec.api_url or redact(spec.dsn, spec.dsn),
            mix=spec.mix,
            rate_per_user=spec.rate_per_user,
            duration_s=self.window(),
            spec_duration_s=spec.duration_s,
            identities=len(spec.identities),
            workers=len(self.workers),
            lost_workers=sorted(self.workers - self.finished),
            started_at=self.started_at,
            finished_at=datetime.now(UTC).isoformat(),
        )


def install(configure: Callable[[WorkerSpec], Any]) -> None:
    """Register the hooks (no-ops unless DEVICELAB_LOAD_SPEC is set). ``configure`` is
    the locustfile's own: Locust's CLI imports that file under another module name."""
    state: dict[str, Any] = {}

    def _init(environment: Any, **_: Any) -> None:
        path = os.environ.get(SPEC_ENV)
        if not path:
            return
        spec = WorkerSpec.model_validate_json(Path(path).read_text())
        if isinstance(environment.runner, MasterRunner):
            state["merged"] = Merged(spec)
        else:
            state["recorder"] = configure(spec)

    def _start(**_: Any) -> None:
        if recorder := state.get("recorder"):
            recorder.final = False
            recorder.open(time.perf_counter())

    def _stop(**_: Any) -> None:
        if recorder := state.get("recorder"):
            recorder.final = True

    def _connect(client_id: str, **_: Any) -> None:
        if merged := state.get("merged"):
            merged.workers.add(str(client_id))

    def _report(data: dict[str, Any], **_: Any) -> None:
        if recorder := state.get("recorder"):
            data[REPORT_KEY] = recorder.drain()

    def _worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
        if (merged := state.get("merged")) and REPORT_KEY in data:
            merged.add(data[REPORT_KEY], str(client_id))

    def _quit(environment: Any, **_: Any) -> None:
        merged = state.get("merged")
        out = os.environ.get(OUT_ENV)
        if merged is not None and out:
            users = getattr(environment.parsed_options, "num_users", None) or 0
            Path(out).write_text(merged.result(int(users)).model_dump_json())

    hooks: list[tuple[Any, Any]] = [
        (events.init, _init),
        (events.test_start, _start),
        (events.test_stop, _stop),
        (events.worker_connect, _connect),
        (events.report_to_master, _report),
        (events.worker_report, _worker_report),
        (events.quitting, _quit),
    ]
    for hook, listener in hooks:
        hook.add_listener(listener)
