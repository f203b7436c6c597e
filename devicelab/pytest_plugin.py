"""The devicelab pytest plugin (entry point ``pytest11``): options, markers, fixtures.

Suites select a device and a network with ``--devicelab-device ID`` and
``--devicelab-network NAME`` (or $DEVICELAB_DEVICE / $DEVICELAB_NETWORK). A test that
uses the ``lab_device`` fixture is marked ``device`` automatically and skipped, with a
reason, when no device is selected. Heavy imports happen inside the fixtures only.

``devicelab_lab`` is the whole lab started once for the session (devicelab.lab.LabSession:
backend, app, shaped proxy, device, probes), on the selected device (default ``web``) and
network (default ``none``). Its tests are marked ``device`` and skipped with the reason
when that device is not available now; an unknown device or network id is a usage error
before anything starts. The session's checks go to ``--devicelab-out DIR`` (results.json,
then the reports when the session ends; a temporary folder without the option), and the
terminal summary lists them. Under pytest-xdist each worker that uses ``devicelab_lab``
starts a lab of its own and writes into ``--devicelab-out DIR/<worker id>`` (gw0, gw1,
...); the controller's summary lists every worker's results.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING

import pytest

from devicelab.pytest_plugin_checks import (
    check_options,
    given_out,
    lab_out,
    note_usage_error,
    worker_id,
    worker_usage_error,
)
from devicelab.pytest_plugin_out import remove_stale_workers
from devicelab.pytest_plugin_stop import xdist_stops_like_ctrl_c

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from devicelab.errors import DeviceLabError
    from devicelab.lab import Lab, LabSession
    from devicelab.models import Device, Inventory, NetworkCatalog, NetworkProfile, Results
    from devicelab.netshape.proxy import ShapedProxy

__all__ = [
    "devicelab_lab",
    "lab_device",
    "lab_inventory",
    "lab_network",
    "network_catalog",
    "pytest_addoption",
    "pytest_collection_finish",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_sessionstart",
    "pytest_terminal_summary",
    "pytest_testnodedown",
    "shaped_proxy",
]

_LAB = pytest.StashKey["Lab"]()
_SESSION = pytest.StashKey["LabSession"]()
_PROXY = pytest.StashKey["ShapedProxy"]()
_STARTED = pytest.StashKey[float]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the --devicelab-* options."""
    group = parser.getgroup("devicelab")
    group.addoption("--devicelab-device", default=os.environ.get("DEVICELAB_DEVICE"),
                    help="inventory id of the device to run device tests on")  # fmt: skip
    group.addoption("--devicelab-network", default=os.environ.get("DEVICELAB_NETWORK", "none"),
                    help="network profile id for device tests (default: none)")  # fmt: skip
    group.addoption("--devicelab-inventory", default=os.environ.get("DEVICELAB_INVENTORY"),
                    help="inventory.yaml to read")  # fmt: skip
    group.addoption("--devicelab-out", default=None,
                    help="folder for the devicelab_lab session's results.json and reports "
                    "(default: a temporary folder)")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers devicelab uses."""
    config.addinivalue_line(
        "markers",
        "device: needs a device of the lab (set on tests using lab_device or devicelab_lab,"
        " which skip when it is not there; deselect with -m 'not device')",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse bad --devicelab-* options before any test runs, on the xdist controller
    too (raises pytest.UsageError); note when the session started: the controller of an
    xdist session lists only the workers' results written since. The xdist controller
    and its workers take SIGTERM and SIGHUP as Ctrl-C (devicelab.pytest_plugin_stop)."""
    import time

    if not worker_id(session.config):  # the controller checked them for its workers
        check_options(session.config)
    session.config.stash[_STARTED] = time.time()
    xdist_stops_like_ctrl_c(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """On the xdist controller: a worker that refused its collected tests (an offline
    network for ``devicelab_lab``) ends the session with that usage error (raises
    pytest.UsageError)."""
    worker_usage_error(node)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use ``lab_device`` or ``devicelab_lab`` as ``device``; skip those
    using ``lab_device`` when no device is selected (``devicelab_lab`` defaults to web)."""
    selected = config.getoption("--devicelab-device")
    skip = pytest.mark.skip(reason="no device selected (--devicelab-device ID)")
    for item in items:
        if "lab_device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)
            if not selected:
                item.add_marker(skip)
        if "devicelab_lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)


#: Fixtures that read --devicelab-network, --devicelab-device and the inventory.
_NETWORK_FIXTURES = frozenset({"lab_network", "shaped_proxy", "devicelab_lab"})
_DEVICE_FIXTURES = frozenset({"lab_device", "devicelab_lab"})
_INVENTORY_FIXTURES = frozenset({"lab_inventory", *_DEVICE_FIXTURES})


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse, before any test runs, what a collected test would fail on: an unknown
    device or network id, a wrong inventory, and for ``devicelab_lab`` an offline network,
    a lab that could not start or a --devicelab-out it cannot write (raises
    pytest.UsageError)."""
    used: set[str] = set()
    for item in session.items:
        used.update(getattr(item, "fixturenames", ()))
    from devicelab.errors import DeviceLabError

    config = session.config
    try:
        if "devicelab_lab" in used:
            config.stash[_LAB] = _lab(config)
            if (out := lab_out(config)) is not None:
                from devicelab.records import check_writable

                check_writable(out, make=False)  # nothing made before a test runs
            return
        if used & _NETWORK_FIXTURES:
            from devicelab.config import network_profile

            network_profile(config.getoption("--devicelab-network"))
        # A wrong inventory given by name is refused whether or not a device is selected:
        # lab_inventory alone met it as a traceback in the test.
        given = config.getoption("--devicelab-inventory")
        if used & _INVENTORY_FIXTURES or given:
            from devicelab.config import device, load_inventory

            inventory = load_inventory(given)
            selected = config.getoption("--devicelab-device")
            if used & _DEVICE_FIXTURES and selected:
                device(selected, inventory)
    except DeviceLabError as exc:
        message = f"devicelab: {_one_line(exc, config)}"
        note_usage_error(config, message)  # an xdist worker's: for the controller to say
        raise pytest.UsageError(message) from exc


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the checks the ``devicelab_lab`` session measured and where they are (under
    xdist, on the controller: those of every worker)."""
    session = terminalreporter.config.stash.get(_SESSION, None)
    if session is not None:
        terminalreporter.section("devicelab")
        _write_checks(terminalreporter, session.results(), session.out_dir / "results.json")
        return
    out = given_out(terminalreporter.config)
    if out is None or worker_id(terminalreporter.config):
        return
    since = terminalreporter.config.stash.get(_STARTED, 0.0)
    found = sorted(p for p in out.glob("gw*/results.json") if p.stat().st_mtime >= since)
    if not found:
        return
    from devicelab.report import load_results

    terminalreporter.section("devicelab")
    for path in found:
        terminalreporter.write_line(f"{path.parent.name}:")
        try:
            results = load_results(path)
        except Exception as exc:  # a worker killed mid-write: say so, list the others
            terminalreporter.write_line(f"  unreadable: {exc}")
            continue
        _write_checks(terminalreporter, results, path)


def _write_checks(reporter: pytest.TerminalReporter, results: Results, path: Path) -> None:
    from devicelab.report import measured_text

    for check in results.checks:
        measured = measured_text(check)
        reporter.write_line(f"{check.status.upper():5} {check.id:26} {measured}")
    s = results.summary
    # A stopped session's checks are those it got to: said, as its reports say it.
    stopped = "unfinished (stopped before its end): " if results.run.finished_at is None else ""
    reporter.write_line(
        f"{stopped}{s.pass_} pass, {s.fail} fail, {s.skip} skip, {s.error} error; results: {path}"
    )


@pytest.fixture(scope="session")
def lab_inventory(pytestconfig: pytest.Config) -> Inventory:
    """The lab inventory (--devicelab-inventory, $DEVICELAB_HOME, ./inventory.yaml)."""
    from devicelab.config import load_inventory

    return load_inventory(pytestconfig.getoption("--devicelab-inventory"))


@pytest.fixture(scope="session")
def network_catalog() -> NetworkCatalog:
    """Every network profile of profiles/networks.yaml."""
    from devicelab.config import load_networks

    return load_networks()


@pytest.fixture(scope="session")
def lab_network(pytestconfig: pytest.Config, network_catalog: NetworkCatalog) -> NetworkProfile:
    """The network profile selected with --devicelab-network."""
    from devicelab.config import network_profile

    return network_profile(pytestconfig.getoption("--devicelab-network"), network_catalog)


@pytest.fixture(scope="session")
def lab_device(pytestconfig: pytest.Config, lab_inventory: Inventory) -> Device:
    """The device selected with --devicelab-device (tests using it skip without one)."""
    from devicelab.config import device

    return device(pytestconfig.getoption("--devicelab-device"), lab_inventory)


@pytest.fixture(scope="session")
def shaped_proxy(pytestconfig: pytest.Config, lab_network: NetworkProfile) -> Iterator[ShapedProxy]:
    """A shaping proxy for the selected network, on a free loopback port, for the session.

    Point clients at ``shaped_proxy.url`` (Playwright: ``proxy={"server": ...url}``);
    ``shaped_proxy.go_offline(seconds)`` cuts the link, ``set_profile("slow-3g")`` (a
    profile id or a NetworkProfile) switches it; after each test the selected network is
    put back and the link brought online. Stopped (port released) at the end.
    """
    from devicelab.netshape.proxy import ShapedProxy

    with ShapedProxy(lab_network, port=0) as proxy:
        pytestconfig.stash[_PROXY] = proxy
        yield proxy


@pytest.fixture(scope="session")
def devicelab_lab(
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[LabSession]:
    """The lab started once for the session on the selected device (default web) and
    network (default none): ``measure(check_id, **options) -> Check``, ``harness``,
    ``proxy``, ``results()`` (devicelab.lab.LabSession). Stopped at the end of the
    session, after results.json and the reports are written to --devicelab-out.

    Skips when the device is not available (web: no browser; phones: not online); fails
    with devicelab's one-line message when a peer cannot start, and errors at teardown
    with it when the session could not put the device back (DeviceLeftChanged).
    """

    from devicelab.errors import DeviceLabError
    from devicelab.interrupts import sigterm_as_interrupt

    # pytest.fail outside the except blocks: inside, pytest prints the error it handles
    # too ("During handling of the above exception, another exception occurred").
    failed = ""
    try:
        lab = pytestconfig.stash.get(_LAB, None) or _lab(pytestconfig)
    except DeviceLabError as exc:
        failed = _one_line(exc, pytestconfig)
    if failed:
        pytest.fail(f"devicelab: {failed}", pytrace=False)
    if why := _unavailable(lab):
        pytest.skip(why)
    out = lab_out(pytestconfig) or tmp_path_factory.mktemp("devicelab")
    try:
        with contextlib.ExitStack() as stack:
            # SIGTERM (a cancelled CI job) ends the session like Ctrl-C: pytest tears the
            # lab down and the device is restored, instead of the process dying on the spot.
            stack.enter_context(sigterm_as_interrupt())
            try:
                session = stack.enter_context(lab.session(out))
            except DeviceLabError as exc:
                failed = _one_line(exc, pytestconfig)
            if failed:
                pytest.fail(f"devicelab: {failed}", pytrace=False)
            pytestconfig.stash[_SESSION] = session
            if not worker_id(pytestconfig):  # an xdist session's gw0, ... are not ours
                remove_stale_workers(session.out_dir)
            yield session
            if request.session.exitstatus == pytest.ExitCode.INTERRUPTED:
                # Ctrl-C or SIGTERM stopped the tests, and pytest tears fixtures down
                # without the exception: hand the lab its interrupt, so the run is
                # recorded as stopped (finished_at null, "unfinished"), not as finished.
                stack.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
    except DeviceLabError as exc:
        # The teardown's error (a phone gone mid-session left changed: DeviceLeftChanged)
        # in devicelab's one line too, not a traceback through the lab.
        failed = _one_line(exc, pytestconfig)
    if failed:
        pytest.fail(f"devicelab: {failed}", pytrace=False)


@pytest.fixture(autouse=True)
def _devicelab_link_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the session's proxy (``shaped_proxy``, ``devicelab_lab``),
    put the session's network back and bring the link online: a test that switched it
    to slow-3g, or cut it, must not leave the next test measuring on that link (its check
    would be judged in the session network's column).

    Not after a Ctrl-C or SIGTERM: no test follows, and the session's teardown stops the
    proxy. A proxy that no longer answers (it died mid-session) errors the test at
    teardown with devicelab's one line, not a traceback."""
    yield
    if request.session.exitstatus == pytest.ExitCode.INTERRUPTED:
        return
    from devicelab.errors import DeviceLabError

    stash = request.config.stash
    links: list[tuple[ShapedProxy, NetworkProfile | None]] = []
    if "shaped_proxy" in request.fixturenames and (proxy := stash.get(_PROXY, None)):
        links.append((proxy, request.getfixturevalue("lab_network")))
    if "devicelab_lab" in request.fixturenames and (session := stash.get(_SESSION, None)):
        links.append((session.proxy, session.lab.profile))
    failed = ""
    for proxy, profile in links:
        try:
            if proxy.profile != profile:
                proxy.set_profile(profile)
            if proxy.status().offline:
                proxy.go_online()
        except DeviceLabError as exc:
            failed = f"putting the session's network back failed: {exc.one_line()}"
    if failed:  # outside the except: pytest would print the handled error too
        pytest.fail(f"devicelab: {failed}", pytrace=False)


#: The lab's hints name the CLI's options; in a pytest session they are the plugin's.
_CLI_OPTION = re.compile(r"(?<![\w-])--(out|device|network|inventory)\b")

_ONE_WORKER = (
    "under pytest-xdist, keep this phone's tests on one worker: -n 0, or --dist loadfile "
    "with them in one file (--dist loadgroup is ignored with pytest 9.2)"
)


def _one_line(exc: DeviceLabError, config: pytest.Config) -> str:
    """devicelab's one line for ``exc``, its hint naming the --devicelab-* options, and
    under xdist a phone another worker holds says how to keep its tests together."""
    hint = _CLI_OPTION.sub(r"--devicelab-\1", exc.hint)
    if worker_id(config) and "already in use by another devicelab run" in exc.message:
        hint = f"{hint}; {_ONE_WORKER}" if hint else _ONE_WORKER
    return f"{exc.message} (hint: {hint})" if hint else exc.message


def _lab(config: pytest.Config) -> Lab:
    """The Lab of the selected device (default web) and network. Raises DeviceLabError
    (UnknownId, ConfigError, BadInput) for a selection it cannot run."""
    from pathlib import Path

    from devicelab.lab import Lab

    inventory = config.getoption("--devicelab-inventory")
    return Lab(
        config.getoption("--devicelab-device") or "web",
        config.getoption("--devicelab-network"),
        inventory=Path(inventory) if inventory else None,
    )


def _unavailable(lab: Lab) -> str:
    """Why the lab's device cannot run now ("" when it can): web, its browser is not
    installed; a phone, not online on its server (adb, usbmuxd)."""
    from devicelab.models import Inventory
    from devicelab.platforms.state import device_states

    (state,) = device_states(Inventory(devices={lab.device.id: lab.device}))
    if state.state in ("ready", "online"):
        return ""
    return f"device {lab.device.id} is not available ({state.state}): {state.detail}"
