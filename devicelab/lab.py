"""The root object of a device run: resolves the device and the network, starts every
peer in order, runs the scenarios, records the results, and tears down in reverse.

    lab = Lab("web", "4g", scenarios=["message_delivery"])
    results = lab.run(Path("devicelab-out"))

    with Lab("web", "4g").session(Path("devicelab-out")) as session:  # kept up (pytest)
        check = session.measure("message_delivery", delivery_count=3)

Start order (teardown is the exact reverse, and runs on success, error and Ctrl-C; a
step that fails to stop is logged and the others still stop):

1. the backend: devicelab's managed PostgreSQL (seeded when empty) and the reference
   server (Supabase-compatible) on a free loopback port;
2. the app: the inventory's ``app.url`` when it answers, else the built test app
   (``capacitor-harness/app/dist``) served on a free loopback port;
3. the shaped proxy (a subprocess, so the run's own work never delays the link), then its
   self-check: the achieved RTT and rates recorded as ``run.network.achieved``;
4. the device, the app loaded, users A and B signed in inside it. Web: Chromium through
   Playwright, every request through the proxy. Android: the phone through the adb
   server, routed through the proxy (adb reverse + http_proxy, journaled and undone),
   then an Appium session (the inventory's server, or a local one started when nothing
   answers on a loopback URL) switched to the app's WebView (or, for a browser session
   such as the chromium driver standing in for a WebView, the app loaded in it). iPhone:
   found through usbmuxd, its Wi-Fi proxy set by hand to the inventory's ``proxy.listen``
   (where the proxy listens), then the same Appium session (XCUITest). Phones reach the
   backend under a name only the proxy resolves, checked from inside the app first
   (devicelab.lab_phone);
   then the samplers (docs/samplers.md) in the background, every sample into
   ``<out>/samples.jsonl``: the browser tree's CPU and memory (web), the app package's
   memory and CPU and the battery over adb (android; the memory checks read the app's
   PSS through the same sampler);
5. the scenarios, each check written to ``<out>/results.json`` as soon as it is measured;
   then the reports (report.md, report.html, junit.xml).

A device the teardown could not put back (a phone gone offline) is said at the end, in
one line naming what is left; a run that got through its plan then raises
DeviceLeftChanged (exit 3), its results and reports already written.

Bad input (unknown ids, an offline network) is refused before anything starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devicelab.errors import BadInput, DeviceLabError
from devicelab.models import (
    BackendInfo,
    Check,
    DeviceInfo,
    NetworkInfo,
    Results,
    RunInfo,
)
from devicelab.scenarios import (
    Scenario,
    ScenarioContext,
    ScenarioOptions,
    battery_drain,
    not_applicable,
    plan,
)
from devicelab.targets import column_for
from devicelab.teardown import Teardown, left_changed
from devicelab.version import full_version

if TYPE_CHECKING:
    from backend_checks.reference.server import ReferenceServer
    from devicelab.harness import Harness
    from devicelab.netshape.proxy import ShapedProxy
    from devicelab.platforms.web import WebDevice
    from devicelab.records import RunRecord
    from devicelab.samplers import RunSampling
    from devicelab.samplers.base import Sampler
    from devicelab.scenarios.fixture import RunFixture

__all__ = ["Lab", "LabSession", "app_build_dir"]

logger = logging.getLogger("devicelab.lab")

Say = Callable[[str], None]


def app_build_dir() -> Path:
    """The built test app: $DEVICELAB_APP_DIR, else capacitor-harness/app/dist of the
    checkout devicelab runs from."""
    if env := os.environ.get("DEVICELAB_APP_DIR"):
        return Path(env)
    return Path(__file__).resolve().parent.parent / "capacitor-harness" / "app" / "dist"


class LabSession:
    """A started lab (:meth:`Lab.session`): the backend with the run's data, the app, the
    shaped proxy, the device with users A and B signed in, kept up until the session ends.

    ``measure(check_id, **options)`` runs one device check (judged, recorded);
    ``harness`` calls the probes directly; ``proxy`` switches the profile or drops the
    link (checks stay judged in the session network's column); ``results()`` is every
    check so far, also on disk in ``<out>/results.json``.
    """

    def __init__(
        self,
        lab: Lab,
        ctx: ScenarioContext,
        record: RunRecord,
        *,
        proxy: ShapedProxy,
        fixture: RunFixture,
    ) -> None:
        self.lab = lab
        self.ctx = ctx
        self.record = record
        self.proxy = proxy
        self.fixture = fixture
        self.harness: Harness = ctx.harness
        self.out_dir = record.out_dir

    def measure(self, check_id: str, **options: Any) -> Check:
        """Run the device check ``check_id`` with ScenarioOptions fields overridden by
        ``options`` (e.g. ``delivery_count=3``); returns its Check, already recorded. A
        check that does not apply is a "skip" and one that cannot run an "error", with
        the reason. Raises UnknownId for an unknown check, BadInput for a wrong option."""
        import difflib

        from pydantic import ValidationError

        from devicelab.models.messages import explain

        (scenario,) = plan([check_id])
        known = list(ScenarioOptions.model_fields)
        for name in options:
            if name not in known:  # pydantic said "Extra inputs are not permitted"
                close = difflib.get_close_matches(name, known, n=1)
                guess = f"; did you mean {close[0]!r}?" if close else ""
                raise BadInput(
                    f"measure({check_id!r}): unknown option {name!r}{guess}",
                    hint=f"options are {', '.join(known)}",
                )
        try:
            chosen = ScenarioOptions.model_validate({**self.ctx.options.model_dump(), **options})
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"])
            message = explain(error)
            raise BadInput(
                f"measure({check_id!r}): option {field}: {message}",
                hint=f"options are {', '.join(known)}",
            ) from exc
        why = self.lab._skip_reason(scenario)
        ctx = dataclasses.replace(self.ctx, options=chosen)
        # Before the scenario: a check that cuts the link itself (reconnect) is no cut of
        # the test's.
        cut = not why and self._link_offline()
        began = time.monotonic()
        try:
            check = scenario.skip(why) if why else self.lab._measure(scenario, ctx)
        except battery_drain.DrainInterrupted as stop:  # its readings so far, then the stop
            self.record.add(self._noted(stop.check, began, cut=cut))
            raise
        check = _in_test(check) if why else self._noted(check, began, cut=cut)
        self.record.add(check)
        return check

    def _link_offline(self) -> bool:
        """Whether the session's link is cut now (``proxy.go_offline``); False when the
        proxy cannot say (a proxy that is down fails the check on its own)."""
        try:
            return bool(self.proxy.status().offline)
        except Exception:  # a note never fails the measurement (nor a stand-in proxy)
            return False

    def _noted(self, check: Check, began: float, *, cut: bool = False) -> Check:
        """``check`` with how long it took and the link it ran on, when a test switched
        it or had cut it (``cut``: offline when the measurement began)."""
        if "duration_s" not in check.evidence:
            # How long the check took: junit's <testcase time> (it read 0.000 for all).
            took = round(time.monotonic() - began, 3)
            check = check.model_copy(update={"evidence": {**check.evidence, "duration_s": took}})
        if self.proxy.profile != self.lab.profile:
            # A test switched the link: the check is still judged in the session network's
            # column, so the evidence says what it really ran on.
            on = self.proxy.profile.id if self.proxy.profile else "none"
            check = _with_note(check, f"measured with the link switched to {on}", link_profile=on)
        if cut:
            check = self._cut_noted(check)
        return _in_test(check)

    def _cut_noted(self, check: Check) -> Check:
        """``check``, measured while the test had the link cut, saying so: an outage the
        test made read as a slow first call or as an unreachable API."""
        throughout = self._link_offline()
        if throughout:
            note = "measured with the link cut by the test (proxy.go_offline), offline throughout"
            hint = (
                "the test cut the link (proxy.go_offline) and it was still offline at the "
                "end: bring it back (proxy.go_online()) before measuring, or measure after "
                "the outage"
            )
        else:
            note = (
                "measured with the link cut by the test (proxy.go_offline): offline when it "
                "began and back during it, so the outage is in its first calls' times"
            )
            hint = (
                "the test cut the link (proxy.go_offline) and it was offline when this "
                "began: measure after the outage, or give the probe a probe_timeout_s "
                "longer than it"
            )
        if check.status == "error":
            # The error's own hint points at the network or the backend: the cut is why.
            message, _, _ = check.reason.partition(" (hint: ")
            return _with_note(check, "", reason=f"{message} (hint: {hint})", link_offline=True)
        return _with_note(check, note, link_offline=True)

    def results(self) -> Results:
        """The session's Results so far (``finished_at`` set once the session ended)."""
        return self.record.results

    def finish(self) -> Results:
        """Stamp the end; write results.json and the reports; returns the Results."""
        return self.record.finish(self.lab.book)


def _with_note(check: Check, note: str, *, reason: str | None = None, **evidence: Any) -> Check:
    """``check`` with ``evidence`` added and ``note`` after its reason (or ``reason``)."""
    if reason is None:
        reason = f"{check.reason}; {note}" if check.reason else note
    return check.model_copy(update={"evidence": {**check.evidence, **evidence}, "reason": reason})


def _in_test(check: Check) -> Check:
    """``check`` with the pytest test that measured it (``evidence.test``, its node id),
    when one did: a session's reports and its comparison with a baseline tell a pytest
    session's checks by it, and a check measured twice by the tests that did."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    # Inherited by a `devicelab run` that a test started: only pytest's own process.
    if not current or "pytest" not in sys.modules or "test" in check.evidence:
        return check
    node = current.rsplit(" (", 1)[0]  # "tests/t.py::test_a (call)"
    return check.model_copy(update={"evidence": {**check.evidence, "test": node}})


class Lab:
    """One device run: ``device`` and ``network`` are ids of the inventory and profiles.

    Raises (at construction, before anything starts) UnknownId for an unknown device,
    network or scenario id, ConfigError for a wrong file, BadInput for an offline network
    and for battery_drain options of the environment it would refuse (a sampling interval
    under 0.1 s, a duration shorter than two of them: DrainOptions.from_env).
    """

    def __init__(
        self,
        device: str,
        network: str,
        *,
        scenarios: Sequence[str] | None = None,
        inventory: Path | None = None,
        options: ScenarioOptions | None = None,
        say: Say | None = None,
    ) -> None:
        from devicelab import config

        self.device = config.device(device, config.load_inventory(inventory))
        self.profile = config.network_profile(network)
        if self.profile.offline:
            raise BadInput(
                f"network {network} is offline: the app could not reach anything",
                hint="pick a shaped network (e.g. 4g) or none; where a check needs the link down "
                "(reconnect), it takes it down itself",
            )
        self.book = config.load_targets()
        self.scenarios = plan(scenarios)
        self.options = options or ScenarioOptions()
        self.say: Say = say or (lambda text: logger.info("%s", text))
        self.platform = self.device.platform
        self.column = column_for(self.platform, self.profile)
        drain = next((s for s in self.scenarios if s.id == battery_drain.CHECK_ID), None)
        if drain and self.device.power.kind != "none" and not self._skip_reason(drain):
            # The check reads them once the proxy, routing and Appium are up: refused here.
            battery_drain.DrainOptions.from_env()
        if self.platform != "web":
            from devicelab.lab_phone import check_phone

            check_phone(self.device)

    def run(self, out_dir: Path) -> Results:
        """Run the scenarios and write results.json and the reports into ``out_dir``.

        Returns the Results. Raises EnvironmentProblem (and its subclasses) when a peer
        cannot start: the backend, the app build, the proxy, the browser.
        """
        from devicelab.records import RunRecord, check_writable, claim_out

        check_writable(out_dir)
        skips = {s.id: self._skip_reason(s) for s in self.scenarios}
        if all(skips.values()):  # nothing to measure: start nothing
            with claim_out(out_dir):
                record = RunRecord(self._run_info(datetime.now(UTC), None, None, None), out_dir)
                for scenario in self.scenarios:
                    record.add(scenario.skip(skips[scenario.id]))
                return record.finish(self.book)
        with self.session(out_dir) as session:
            for scenario in self.scenarios:
                session.measure(scenario.id)
        return session.results()

    @contextlib.contextmanager
    def session(self, out_dir: Path) -> Iterator[LabSession]:
        """Start the lab and keep it up for the ``with`` block; yields the LabSession.

        Checks go to ``<out_dir>/results.json`` as they are measured; when the block ends,
        the reports are written next to it (``finished_at`` null when it ended by an
        exception or Ctrl-C: the checks it got to). The teardown runs in reverse either
        way. Raises EnvironmentProblem (and its subclasses) when a peer cannot start;
        DeviceLeftChanged after a session that ended well but left a device changed.
        """
        from devicelab.records import check_writable, claim_out

        check_writable(out_dir)
        with claim_out(out_dir):  # a second run on this --out is refused while we write
            teardown = Teardown(self.say)
            since, finished, torn_down = time.time(), False, False
            started = datetime.now(UTC)
            try:
                try:
                    session = self._start(out_dir, started, teardown)
                except BaseException:
                    self._replace_previous_set(out_dir, started)
                    raise
                try:
                    yield session
                except BaseException:
                    session.record.stopped(self.book)  # what it got to, as one set of files
                    raise
                session.finish()
                finished = True
            finally:
                try:
                    teardown.run()
                    torn_down = True
                finally:
                    left = left_changed(since) if self.platform != "web" else None
                    if left is not None and not (finished and torn_down):
                        # An error or Ctrl-C goes on: its line must not hide the phone's state.
                        self.say(f"warning: {left.one_line()}")
            if left is not None:
                left.results = session.results()
                raise left

    def _replace_previous_set(self, out_dir: Path, started: datetime) -> None:
        """A session that stopped while starting measured nothing; a previous run's set in
        ``out_dir`` would read as this run's, so it is replaced by this run's (no checks,
        ``finished_at`` null). An empty ``out_dir`` stays empty."""
        from devicelab.records import RunRecord

        if (out_dir / "results.json").exists():
            record = RunRecord(self._run_info(started, None, None, None), out_dir)
            record.stopped(self.book)

    # --- steps ------------------------------------------------------------------------
    def _skip_reason(self, scenario: Scenario) -> str:
        why = not_applicable(scenario, self.platform, self.book)
        if not why and scenario.run is None:
            why = f"not built yet: {scenario.not_built}"
        return why

    def _start(self, out_dir: Path, started: datetime, teardown: Teardown) -> LabSession:
        """Start every peer in order, each stop pushed on ``teardown``; returns the session."""
        from devicelab import lab_phone
        from devicelab.records import RunRecord

        # A phone or a browser that is not there fails the run before the backend starts.
        phone = lab_phone.attach(self.device, self.say) if self.platform != "web" else None
        if phone is not None:
            # Attached is claimed (both platforms): put back and let go at the end, or the
            # claim outlives the session and the next one in this process is refused.
            what = "(route and settings)" if self.platform == "android" else "(claim)"
            teardown.push(f"{self.platform} device {what}", phone.close)
            lab_phone.check_appium(self.device)  # before anything starts or the phone changes
        else:
            from devicelab.platforms.web import check_browser

            check_browser(self.device)
        fixture, server = self._start_backend(teardown)
        app_url = self._start_app(teardown)
        proxy, network = self._start_proxy(teardown)
        heap_mb: Callable[[], float] | None = None
        battery: Sampler | None = None
        app_state: lab_phone.PhoneApp | None = None
        backend_url = server.url
        if phone is not None:
            backend_url = lab_phone.backend_url(server.url)
            harness, app_state = lab_phone.start_app(
                device=self.device,
                phone=phone,
                teardown=teardown,
                proxy=proxy,
                app_url=app_url,
                backend=backend_url,
                out_dir=out_dir,
                timeout_s=self.options.probe_timeout_s,
                say=self.say,
            )
            device_info = phone.info()
        else:
            web, harness = self._start_device(teardown, proxy.url, app_url)
            device_info, heap_mb = web.info(), web.heap_used_mb
        self.say("signing users A and B in inside the app")
        harness.configure(
            supabase_url=backend_url,
            anon_key=server.anon_key,
            users=[fixture.user_a, fixture.user_b],
        )
        teardown.push("app session", harness.reset)
        backend = BackendInfo(kind="reference", url=server.url)
        record = RunRecord(self._run_info(started, device_info, network, backend), out_dir)
        # --- samplers (devicelab.samplers, docs/samplers.md): the browser's CPU and memory in
        # the background; every sample in <out>/samples.jsonl at once, series in results.json.
        sampling: RunSampling | None = None
        if self.platform == "web":
            from devicelab.samplers import web_run_sampling

            sampling = web_run_sampling(web, out_dir, started)
        # The app's memory and CPU and the battery (adb; sysmontap and lockdownd's
        # IORegistry); the memory checks read the app's memory through the same sampler.
        elif phone is not None:
            assert app_state is not None
            sampling, heap_mb, battery = lab_phone.sampling(
                self.device, phone, app_state, out_dir, started
            )
        if sampling is not None:
            teardown.push("samplers", sampling.close)
            record.follow(sampling)
        # --- end samplers
        ctx = ScenarioContext(
            harness=harness,
            platform=self.platform,
            column=self.column,
            book=self.book,
            options=self.options,
            conversation_id=fixture.conversation_id,
            big_conversation_id=fixture.big_conversation_id,
            search_terms=fixture.search_terms,
            link=proxy,
            heap_mb=heap_mb,
            say=self.say,
            app_state=app_state,
            battery=battery,
        )
        return LabSession(self, ctx, record, proxy=proxy, fixture=fixture)

    def _measure(self, scenario: Scenario, ctx: ScenarioContext) -> Check:
        """The scenario's check; a DeviceLabError becomes an "error" check with its reason
        (the run goes on with the next scenario)."""
        if scenario.run is None:
            return scenario.skip(f"not built yet: {scenario.not_built}")
        self.say(f"running {scenario.id}")
        try:
            if scenario.id == battery_drain.CHECK_ID:  # the one check that needs the power
                return battery_drain.run(ctx, power=self.device.power)
            return scenario.run(ctx)
        except DeviceLabError as exc:
            logger.warning("%s failed: %s", scenario.id, exc.one_line())
            return Check(
                id=scenario.id,
                title=scenario.title,
                category=scenario.category,
                status="error",
                reason=exc.one_line(),
            )

    def _run_info(
        self,
        started: datetime,
        device: DeviceInfo | None,
        network: NetworkInfo | None,
        backend: BackendInfo | None,
    ) -> RunInfo:
        if network is None:  # no proxy started: the profile alone, as `proxy check` says it
            from devicelab.netshape.selfcheck import network_info

            network = network_info(self.profile, measured=False)
        # A run of battery_drain alone (what `devicelab battery` starts on each phone) is the
        # contract's "battery" kind; any other plan is a device run.
        battery = [s.id for s in self.scenarios] == ["battery_drain"]
        return RunInfo(
            id=uuid.uuid4().hex[:12],
            kind="battery" if battery else "device",
            started_at=started,
            devicelab_version=full_version(),
            device=device or DeviceInfo.model_validate(self.device.summary()),
            network=network,
            backend=backend,
        )

    def _start_backend(self, teardown: Teardown) -> tuple[RunFixture, ReferenceServer]:
        from backend_checks.managed import ManagedPostgres
        from backend_checks.reference.server import ReferenceServer
        from devicelab.scenarios.fixture import prepare

        self.say("starting the backend (managed PostgreSQL + reference server)")
        dsn = ManagedPostgres().ensure()
        fixture = prepare(dsn, say=self.say)
        server = ReferenceServer(dsn).start()
        teardown.push("reference server", server.stop)
        return fixture, server

    def _start_app(self, teardown: Teardown) -> str:
        from devicelab.platforms.web import StaticApp, answers

        given = self.device.app.url if self.device.app else None
        if given and answers(given):
            self.say(f"using the app served at {given}")
            return given
        app = StaticApp(app_build_dir()).start()
        teardown.push("app server", app.stop)
        self.say(f"serving the test app build at {app.url}")
        return app.url

    def _start_proxy(self, teardown: Teardown) -> tuple[ShapedProxy, NetworkInfo]:
        from devicelab.netshape.proxy import ShapedProxy
        from devicelab.netshape.selfcheck import network_info

        self.say(f"starting the shaped proxy ({self.profile.id or self.profile.label})")
        if self.platform == "web":
            proxy = ShapedProxy(self.profile, mode="subprocess").start()
        else:
            from devicelab.lab_phone import start_phone_proxy

            proxy = start_phone_proxy(self.device, self.profile)
        teardown.push("shaped proxy", proxy.stop)
        network = network_info(self.profile, proxy)
        if network.achieved is not None:
            a = network.achieved
            self.say(
                f"link achieved: RTT {a.rtt_ms} ms, down {a.down_kbps} kbps, up {a.up_kbps} kbps"
            )
        for line in network.off_profile():
            self.say(f"warning: the link is off its profile, the checks run on it: {line}")
        return proxy, network

    def _start_device(
        self, teardown: Teardown, proxy_url: str, app_url: str
    ) -> tuple[WebDevice, Harness]:
        from devicelab.harness import Harness
        from devicelab.platforms.web import WebDevice

        self.say(f"launching {self.device.id} ({self.device.model})")
        web = WebDevice(self.device, proxy_url=proxy_url).create()
        teardown.push("browser", web.close)
        web.open(app_url)
        harness = Harness(web.evaluate, timeout_s=self.options.probe_timeout_s)
        harness.wait_ready()
        return web, harness
