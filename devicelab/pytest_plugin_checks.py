"""What the devicelab pytest plugin checks before any test runs (devicelab/pytest_plugin.py
uses these; heavy imports inside).

Under pytest-xdist the controller collects nothing, and a UsageError raised in a worker
reaches the user as an INTERNALERROR of the controller. So the options are checked where
every session passes, the controller included (``check_options``, from
``pytest_sessionstart``), and what only the collected tests tell (``devicelab_lab`` on an
offline network) is sent from the worker to the controller (``note_usage_error``, then
``worker_usage_error`` there), which refuses it as the same one-line usage error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

__all__ = [
    "WORKER_FOLDER",
    "check_options",
    "given_out",
    "lab_out",
    "note_usage_error",
    "worker_id",
    "worker_usage_error",
]

#: The name of an xdist worker's folder in --devicelab-out.
WORKER_FOLDER = re.compile(r"gw\d+")

#: The key of a worker's usage error in xdist's workeroutput (sent back to the controller).
_USAGE_ERROR = "devicelab_usage_error"


def worker_id(config: pytest.Config) -> str:
    """The pytest-xdist worker id (gw0, ...) of this process, "" when it is no worker."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput.get("workerid", "")) if isinstance(workerinput, dict) else ""


def given_out(config: pytest.Config) -> Path | None:
    """--devicelab-out, relative to where pytest was started (not to a test's working
    folder at write time); None without the option."""
    given = config.getoption("--devicelab-out")
    return config.invocation_params.dir / given if given else None


def lab_out(config: pytest.Config) -> Path | None:
    """Where this process's ``devicelab_lab`` writes: --devicelab-out, in an xdist worker
    its own folder in it (``DIR/gw0``, ...); None without the option."""
    out = given_out(config)
    if out is not None and (worker := worker_id(config)):
        return out / worker  # each xdist worker runs a lab of its own: its own results
    return out


def check_options(config: pytest.Config) -> None:
    """Refuse the --devicelab-* options that no test could run with, whether or not a
    collected test uses the fixtures: an unknown device or network id, an inventory that
    cannot be read, and a --junitxml that is a junit.xml devicelab writes into
    --devicelab-out (its own, or an xdist worker's in ``gw<N>/``). Reads the YAML files
    only (no device is touched). Raises pytest.UsageError ("devicelab: ...", exit 4)."""
    from devicelab.errors import DeviceLabError

    network = config.getoption("--devicelab-network")
    selected = config.getoption("--devicelab-device")
    inventory = config.getoption("--devicelab-inventory")
    try:
        # "none" (the default) needs no profiles file read on every pytest run.
        if network and network != "none":
            from devicelab.config import network_profile

            network_profile(network)
        if selected or inventory:
            from devicelab.config import device, load_inventory

            lab = load_inventory(inventory)
            if selected:
                device(selected, lab)
    except DeviceLabError as exc:
        raise pytest.UsageError(f"devicelab: {exc.one_line()}") from exc
    _check_junitxml(config)


def _check_junitxml(config: pytest.Config) -> None:
    out = given_out(config)
    junit = config.getoption("xmlpath", None)
    if out is None or not junit:
        return
    # As pytest's junitxml plugin resolves its path: against the working folder.
    mine = Path(os.path.expandvars(junit)).expanduser().resolve()
    out = out.resolve()
    # An xdist worker writes its own into DIR/gw0, ...: whatever -n this session has (a
    # plain session after an xdist one removes those folders, pytest's file with them).
    if mine == out / "junit.xml":
        whose = "the junit.xml devicelab writes"
    elif (
        mine.name == "junit.xml"
        and mine.parent.parent == out
        and WORKER_FOLDER.fullmatch(mine.parent.name)
    ):
        whose = f"the junit.xml devicelab's xdist worker {mine.parent.name} writes"
    else:
        return
    raise pytest.UsageError(
        f"devicelab: --junitxml {junit} is {whose} into --devicelab-out "
        f"{config.getoption('--devicelab-out')} (hint: give --junitxml another path, or "
        "--devicelab-out another folder)"
    )


def note_usage_error(config: pytest.Config, message: str) -> None:
    """In an xdist worker, keep ``message`` (the usage error it is about to raise) for the
    controller, which receives it when the worker finishes. Does nothing elsewhere."""
    workeroutput = getattr(config, "workeroutput", None)
    if isinstance(workeroutput, dict):
        workeroutput[_USAGE_ERROR] = message


def worker_usage_error(node: object) -> None:
    """On the xdist controller, when a worker went down: raise the usage error it noted
    (pytest.UsageError, so pytest prints its one line and exits 4, instead of xdist's
    INTERNALERROR about a worker that ended without running its tests)."""
    workeroutput = getattr(node, "workeroutput", None)
    if isinstance(workeroutput, dict) and (message := workeroutput.get(_USAGE_ERROR)):
        raise pytest.UsageError(str(message))
