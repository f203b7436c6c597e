"""The battery run across a device farm: ``battery_drain`` on every phone at once.

    farm = BatteryFarm(["android-lowend", "iphone11"], network="wifi", duration_s=3600)
    result = farm.run(Path("devicelab-out/battery"))   # FarmResult; farm.json, farm.md

Each phone runs in a process of its own (``devicelab run --device ID --scenario
battery_drain``), all at the same time, so an hour is an hour for the whole farm and one
phone that fails (unreachable, still charging) does not stop the others. Each process
restores its own phone (journaled route, power port, battery simulation) as a single run
does, on success, error and Ctrl-C. Before they start, the farm seeds the embedded
backend once, so the runs never race to seed it.

Output: ``<out>/<device>/`` holds each run's results.json, reports and ``run.log`` (its
progress lines); ``<out>/farm.json`` (schema ``devicelab.farm/1``) and ``farm.md`` sum the
farm up, one row per phone. The exit code is 1 when a row failed its target, else the worst
of the rows' (3 > 2 > 0), as a single run's failed check wins over one that could not run; a run
that ended by a signal the farm did not send it (someone's kill, the OOM killer) did not
finish: its row is an error, exit 3, naming the signal.

Ctrl-C (SIGINT), SIGTERM or SIGHUP reaches every run once, which stops its workload and
restores its phone; the farm waits for them (up to a minute each), writes farm.json and
farm.md, then stops as that signal asks (130, 143, 129 from the CLI). Any further signal
of the three is ignored until then: it would cut that wait short.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from devicelab.errors import BadInput
from devicelab.farm_runs import STOPS, Run, Say, interrupt, signal_name, stopping, wait_all

__all__ = ["BatteryFarm", "FarmDevice", "FarmResult"]

logger = logging.getLogger("devicelab.farm")

_CHECK = "battery_drain"
#: How long a run may take to restore its phone after the farm passes it Ctrl-C.
_STOP_GRACE_S = 60.0
#: Exit codes of a run stopped by Ctrl-C (SIGINT), SIGTERM or SIGHUP (128 + the signal):
#: it stopped its workload and restored its phone.
_STOPPED = {128 + s: s for s in STOPS}
#: A row's exit code when its run did not finish (killed, stopped from outside the farm).
_UNFINISHED = 3


class FarmDevice(BaseModel):
    """One phone's row of the farm: its run's exit code and its battery_drain check."""

    model_config = ConfigDict(extra="forbid")

    id: str
    platform: str
    model: str
    exit_code: int
    status: Literal["pass", "fail", "skip", "error"]
    value: float | None = None
    unit: str = ""
    reason: str = ""
    results: str = ""


class FarmResult(BaseModel):
    """The whole farm run (``farm.json``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["devicelab.farm/1"] = Field(default="devicelab.farm/1", alias="schema")
    started_at: datetime
    finished_at: datetime
    network: str
    duration_s: float
    devices: list[FarmDevice]

    def exit_code(self) -> int:
        """The farm's exit code: 1 when a drain failed its target (a regression is never
        hidden behind a phone that could not be measured, as in a single run), else the
        worst of its rows' (0 every drain passed, 2 bad input, 3 one could not be
        measured); a row outside 0-3 (a run the farm stopped) counts as 3."""
        codes = [d.exit_code if 0 <= d.exit_code <= 3 else 3 for d in self.devices]
        return 1 if 1 in codes else max(codes, default=0)

    def table(self) -> list[str]:
        """The farm as Markdown table lines. Ids, models (a phone names its own) and
        reasons are code spans, so no renderer acts on them; units as people write them."""
        from devicelab.report._common import fmt_value
        from devicelab.report.markdown import code_span

        lines = ["| device | model | status | drain | reason |", "|---|---|---|---:|---|"]
        for d in self.devices:
            drain = code_span(fmt_value(d.value, d.unit)) if d.value is not None else ""
            reason = code_span(d.reason) if d.reason else ""
            lines.append(
                f"| {code_span(d.id)} | {code_span(d.model)} | {d.status} | {drain} | {reason} |"
            )
        return lines


class BatteryFarm:
    """``battery_drain`` on ``devices`` (None: every phone of the inventory whose power
    can be cut) at once, through ``network``, for ``duration_s`` each.

    Raises (at construction, before anything starts) UnknownId for an unknown device or
    network, BadInput for a run shorter than two battery readings or a bad
    ``DEVICELAB_BATTERY_SAMPLE_S`` (:func:`~devicelab.scenarios.battery_drain.sampling_for`),
    for a web device, an offline network, a farm with no phone or none
    whose power the inventory can cut (it would measure nothing), and the same refusals
    as a single run (Appium, proxy) for each phone.
    """

    def __init__(
        self,
        devices: Sequence[str] | None = None,
        *,
        network: str = "wifi",
        duration_s: float = 3600.0,
        inventory: Path | None = None,
        say: Say | None = None,
    ) -> None:
        from devicelab import config
        from devicelab.lab import Lab
        from devicelab.scenarios.battery_drain import sampling_for

        if duration_s <= 0:
            raise BadInput(f"duration {duration_s:g} s is not positive", hint="e.g. 1h")
        # Each run reads DEVICELAB_BATTERY_SAMPLE_S only once its proxy, routing and
        # Appium session are up: checked here, once, before anything starts.
        sampling_for(duration_s)
        lab_inventory = config.load_inventory(inventory)
        if devices and (twice := sorted({d for d in devices if list(devices).count(d) > 1})):
            raise BadInput(
                f"--device {twice[0]} is given twice: two runs would cut the same phone's "
                "power and write the same folder",
                hint="name each phone once",
            )
        if devices:
            chosen = [config.device(d, lab_inventory) for d in devices]
        else:
            chosen = [
                d
                for d in lab_inventory.devices.values()
                if d.platform != "web" and d.power.kind != "none"
            ]
            if not chosen:
                raise BadInput(
                    "no phone of the inventory can run a battery drain (power: none)",
                    hint="set power: {kind: uhubctl|manual} on the phones (docs/samplers.md), "
                    "or name them with --device",
                )
        for device in chosen:
            if device.platform == "web":
                raise BadInput(
                    f"{device.id} is a web device: battery drain is N/A on web",
                    hint="name phones only (android or ios)",
                )
        if (same := lab_inventory.same_phone([d.id for d in chosen])) is not None:
            first, second, what = same
            raise BadInput(
                f"{first} and {second} are one phone ({what}): two runs would drive it and "
                "cut its power at once",
                hint="name one of them with --device (each phone once)",
            )
        if (shared := lab_inventory.shared_proxy([d.id for d in chosen])) is not None:
            first, second, listen = shared
            raise BadInput(
                f"{first} and {second} both have their shaped proxy listen on {listen}: two "
                "runs at once cannot both listen there",
                hint=f"give each phone its own port in inventory.yaml (devices.{second}.proxy"
                ".listen, and the phone's Wi-Fi proxy setting with it)",
            )
        # Every run would skip its drain ("real drain needs the power cut") and the farm
        # would exit 0 having measured nothing.
        if all(d.power.kind == "none" for d in chosen):
            names = ", ".join(d.id for d in chosen)
            raise BadInput(
                f"{names}: power is none in the inventory, so the farm would measure nothing "
                "(battery drain needs the power cut)",
                hint="set power: {kind: uhubctl, hub, port} or {kind: manual} on the phone in "
                'inventory.yaml (docs/device_run.md, "Battery drain")',
            )
        self.devices = chosen
        self.network = network
        self.duration_s = duration_s
        self.inventory = inventory
        self.say: Say = say or (lambda text: logger.info("%s", text))
        #: The FarmResult of the last run(), also when a signal stopped it (None before).
        self.result: FarmResult | None = None
        # Every refusal of a single run, for each phone, before anything starts.
        for device in chosen:
            Lab(device.id, network, scenarios=[_CHECK], inventory=inventory)

    def run(self, out_dir: Path) -> FarmResult:
        """Run the farm; returns the FarmResult, also written to ``<out_dir>/farm.json``
        and ``farm.md``. Raises EnvironmentProblem when the embedded backend cannot
        start; BadInput when ``out_dir`` cannot be written; after SIGINT, SIGTERM or
        SIGHUP, what the handler before did (the CLI's: KeyboardInterrupt, exit 130, 143,
        129) or KeyboardInterrupt, once every run has restored its phone (or was killed
        after the grace) and farm.json is written (its FarmResult in :attr:`result`).
        Raises BadInput, before anything is prepared, when called outside the main
        thread: only the main thread gets the signals the farm must pass on to its runs
        (each in a session of its own, no Ctrl-C reaches them but the farm's)."""
        from devicelab.records import check_writable, claim_out

        if threading.current_thread() is not threading.main_thread():
            raise BadInput(
                "BatteryFarm.run() was called outside the main thread: it could not pass "
                "Ctrl-C or SIGTERM on to its runs, which would keep their phones changed",
                hint="call it from the main thread, or start `devicelab battery` as a "
                "subprocess from that thread",
            )
        check_writable(out_dir)
        with claim_out(out_dir):  # a second farm on this folder is refused
            started = datetime.now(UTC)
            self._seed()
            self.say(
                f"battery drain on {len(self.devices)} phone(s) for {self.duration_s:g} s each, "
                f"network {self.network}: {', '.join(d.id for d in self.devices)}"
            )
            runs: dict[str, Run] = {}
            with stopping(runs) as hold:
                try:
                    for device in self.devices:
                        runs[device.id] = self._start(device.id, out_dir / device.id)
                    codes = wait_all(runs)
                except KeyboardInterrupt:
                    hold()
                    self.say("interrupted: the runs restore their phones")
                    interrupt(runs)
                    codes = wait_all(runs, grace_s=_STOP_GRACE_S)
                    # What each run wrote (and why the others have nothing) is kept: an
                    # overnight farm stopped at 6 a.m. still says where every phone got to.
                    self.result = self._result(started, codes, runs, out_dir)
                    _write(self.result, out_dir)
                    raise
            self.result = self._result(started, codes, runs, out_dir)
            _write(self.result, out_dir)
            return self.result

    def _result(
        self, started: datetime, codes: dict[str, int], runs: dict[str, Run], out_dir: Path
    ) -> FarmResult:
        return FarmResult(
            started_at=started,
            finished_at=datetime.now(UTC),
            network=self.network,
            duration_s=self.duration_s,
            devices=[
                _row(d.id, d.model, d.platform, runs.get(d.id), codes.get(d.id), out_dir)
                for d in self.devices
            ],
        )

    # --- steps --------------------------------------------------------------------------
    def _seed(self) -> None:
        """Seed the embedded backend once (the runs would otherwise race to seed it)."""
        from backend_checks.managed import ManagedPostgres
        from devicelab.scenarios.fixture import prepare

        self.say("preparing the backend (managed PostgreSQL)")
        prepare(ManagedPostgres().ensure(), say=self.say)

    def _start(self, device: str, out: Path) -> Run:
        out.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "devicelab", "run", "--device", device, "--network",
                self.network, "--scenario", _CHECK, "--out", str(out)]  # fmt: skip
        if self.inventory is not None:
            argv += ["--inventory", str(self.inventory)]
        env = {**os.environ, "DEVICELAB_BATTERY_DURATION_S": f"{self.duration_s:g}"}
        log = (out / "run.log").open("w", encoding="utf-8")
        started = time.time()
        # A session of its own: a terminal's Ctrl-C reaches the farm alone, which passes it
        # on once. Both at once interrupted a run again while it switched its hub port
        # back on, and the phone stayed unpowered.
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=env, start_new_session=True)  # fmt: skip
        run = Run(device, process, log, started)
        reader = threading.Thread(
            target=run.pump, args=(self.say,), name=f"farm-{device}", daemon=True
        )
        reader.start()
        run.reader = reader
        return run


def _row(
    device: str, model: str, platform: str, run: Run | None, code: int | None, out: Path
) -> FarmDevice:
    """The farm's row of ``device``: its run's exit code ``code`` and the battery_drain
    check of the results.json it wrote under ``out`` (None, None: it was not started)."""
    from devicelab.report import load_results

    if run is None or code is None:
        return FarmDevice(id=device, platform=platform, model=model,
                          exit_code=_UNFINISHED, status="error",
                          reason="not started: the farm was stopped first")  # fmt: skip
    path = out / device / "results.json"
    if run.summarised and run.interrupted and code in (-signal.SIGINT, 128 + signal.SIGINT):
        # The farm's Ctrl-C came after the run printed its results, so after its check
        # ended and its phone was put back: as it would have exited (a Ctrl-C that lands
        # in the interpreter's shutdown kills it with SIGINT, which is no sign of a phone
        # left changed).
        code = _UNFINISHED if run.error else _exit_code_of(path)
    ended = _ended(code, run, path.parent)
    # The farm's contract (0-3), unless the farm itself stopped the run (its 130).
    exit_code = code if 0 <= code <= 3 or (run.interrupted and code in _STOPPED) else 3
    # A results.json older than this run is a previous run's (the same --out again): this
    # run ended before writing its own, and its error line says why.
    if not path.exists() or path.stat().st_mtime < run.started:
        why = ended or run.error
        why = why or f"the run exited {code} without results (see {path.parent}/run.log)"
        return FarmDevice(id=device, platform=platform, model=model,
                          exit_code=max(exit_code, 3), status="error",
                          reason=why)  # fmt: skip
    results = load_results(path)
    check = next((c for c in results.checks if c.id == _CHECK), None)
    info = results.run.device
    row = FarmDevice(id=device, platform=platform, model=info.model if info else model,
                     exit_code=exit_code, status="error", results=str(path))  # fmt: skip
    if check is None:  # it stopped before its check: its own error line says why
        row.reason = ended or run.error or "the run recorded no battery_drain check"
        return row
    row.status, row.value, row.unit = check.status, check.value, check.unit or ""
    # A check judged before a kill still stands; the phone may not have been restored. A
    # drain the farm interrupted recorded its readings so far: the row says both.
    row.reason = "; ".join(r for r in (check.reason or "", ended) if r)
    return row


def _exit_code_of(path: Path) -> int:
    """The exit code of the run whose results.json is ``path`` (3 when it cannot be read)."""
    from devicelab.errors import DeviceLabError
    from devicelab.report import load_results

    try:
        return load_results(path).exit_code()
    except (DeviceLabError, OSError, ValueError):
        return _UNFINISHED


def _ended(code: int, run: Run, folder: Path) -> str:
    """Why a run that ended by a signal ended early, or "" when it exited by itself."""
    samples = folder / "samples.jsonl"
    if _battery_read(samples, since=run.started):
        readings = f"readings so far in {samples}"
    else:
        readings = "before measuring: no battery reading yet"
    if code < 0:  # no handler ran: nothing was put back
        name = signal_name(-code)
        by = " by the farm, its restore not done within the grace" if run.killed else ""
        return (
            f"the run was killed by {name}{by} before it finished ({readings}): the phone may "
            "be left changed until its next run (devicelab's journal puts it back then; "
            "`devicelab devices` shows it)"
        )
    if code not in _STOPPED or run.error:
        return ""
    if run.interrupted:
        return f"interrupted before its check ended ({readings})"
    # Not the farm's doing: someone stopped this run alone; the farm did not finish it.
    return (
        f"the run was stopped by {signal_name(_STOPPED[code])}, not sent by the farm, before "
        f"its check ended; it restored its phone ({readings})"
    )


def _battery_read(samples: Path, since: float) -> bool:
    """Whether ``samples`` (a samples.jsonl) holds a battery reading of the run started at
    ``since``: the log is created empty before the drain, and another run's stays behind."""
    try:
        if samples.stat().st_mtime < since:
            return False
        with samples.open(encoding="utf-8", errors="replace") as lines:
            return any('"battery.' in line for line in lines)
    except OSError:
        return False


def _write(result: FarmResult, out_dir: Path) -> None:
    """farm.json and farm.md, each written whole (a temporary file, then renamed)."""
    from devicelab.report.markdown import code_span

    files = {
        "farm.json": result.model_dump_json(indent=2, by_alias=True),
        "farm.md": "\n".join(
            [
                f"# Battery drain across the farm ({code_span(result.network)}, "
                f"{result.duration_s:g} s)",
                "",
                *result.table(),
                "",
            ]
        ),
    }
    for name, text in files.items():
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out_dir / name)
