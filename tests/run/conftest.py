"""Fixtures shared by the run tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devicelab.testing.adb_server import PrivateAdbServer
from devicelab.testing.standins import lab_state


@pytest.fixture(scope="module")
def adb(request: pytest.FixtureRequest) -> Iterator[PrivateAdbServer]:
    """A DEVICELAB_STATE of the test module's own (cluster and journal) and a private adb
    server on a free port (HOME in the state folder, so no key lands in ~/.android and no
    stray server starts on 5037); ``adb.env`` runs devicelab processes in that lab. The
    cluster and the adb server are stopped after."""
    name = request.module.__name__.rsplit(".", maxsplit=1)[-1].removeprefix("test_")
    with lab_state(f"dl-{name}-") as env:
        try:
            server = PrivateAdbServer(Path(env["HOME"]))
        except FileNotFoundError as exc:
            pytest.skip(f"{exc}")
        server.env["DEVICELAB_STATE"] = env["DEVICELAB_STATE"]
        with server:
            yield server
