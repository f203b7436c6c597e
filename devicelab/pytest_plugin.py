"""The devicelab pytest plugin (entry point ``pytest11``): options, markers, fixtures.

Suites select a device and a network with ``--devicelab-device ID`` and
``--devicelab-network NAME`` (or $DEVICELAB_DEVICE / $DEVICELAB_NETWORK). A test that
uses the ``lab_device`` fixture is marked ``device`` automatically and skipped, with a
reason, when no device is selected. Heavy imports happen inside the fixtures only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devicelab.models import Device, Inventory, NetworkCatalog, NetworkProfile
    from devicelab.netshape.proxy import ShapedProxy

__all__ = [
    "lab_device",
    "lab_inventory",
    "lab_network",
    "network_catalog",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "shaped_proxy",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the --devicelab-* options."""
    group = parser.getgroup("devicelab")
    group.addoption("--devicelab-device", default=os.environ.get("DEVICELAB_DEVICE"),
                    help="inventory id of the device to run device tests on")  # fmt: skip
    group.addoption("--devicelab-network", default=os.environ.get("DEVICELAB_NETWORK", "none"),
                    help="network profile id for device tests (default: none)")  # fmt: skip
    group.addoption("--devicelab-inventory", default=os.environ.get("DEVICELAB_INVENTORY"),
                    help="inventory.yaml to read")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers devicelab uses."""
    config.addinivalue_line("markers", "device: needs a device of the lab (auto-skipped)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use ``lab_device`` as ``device``; skip them when none is selected."""
    selected = config.getoption("--devicelab-device")
    skip = pytest.mark.skip(reason="no device selected (--devicelab-device ID)")
    for item in items:
        if "lab_device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)
            if not selected:
                item.add_marker(skip)


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
def shaped_proxy(lab_network: NetworkProfile) -> Iterator[ShapedProxy]:
    """A shaping proxy for the selected network, on a free loopback port, for the session.

    Point clients at ``shaped_proxy.url`` (Playwright: ``proxy={"server": ...url}``);
    ``shaped_proxy.go_offline(seconds)`` cuts the link. Stopped (port released) at the end.
    """
    from devicelab.netshape.proxy import ShapedProxy

    with ShapedProxy(lab_network, port=0) as proxy:
        yield proxy
