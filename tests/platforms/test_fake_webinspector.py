"""The fake iPhone's Web Inspector through pymobiledevice3's own WebinspectorService and
InspectorSession, end to end over the fake usbmuxd: lockdownd starts the notification
proxy and webinspectord (TLS), WIR plists carry the listings and the inspector protocol
of a multi-target page, the heap snapshot is WebKit's Inspector format.

The server side (devicelab.testing.fake_webinspector) shares no code with
pymobiledevice3.services.webinspector, so each checks the other's reading of the
protocol."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from devicelab.testing.fake_dtx import APP_PID
from devicelab.testing.fake_lockdownd import NOTIFICATION_PROXY, WEBINSPECTOR
from devicelab.testing.fake_usbmuxd import IPHONE_11, FakeIPhone, FakeUsbmuxd
from devicelab.testing.fake_webinspector import (
    HEAP_BYTES,
    METHOD_NOT_FOUND,
    WEBINSPECTORD_DISABLED,
    FakeWebView,
    heap_snapshot,
)

pytest.importorskip("pymobiledevice3")

UDID = "00008030-001A2B3C4D5E802E"


def _phone(usbmuxd: FakeUsbmuxd, version: str = "17.5.1", **fields: Any) -> FakeIPhone:
    phone = FakeIPhone(UDID, values={**IPHONE_11, "ProductVersion": version}, **fields)
    usbmuxd.attach(phone)
    return phone


def _with_inspector(usbmuxd: FakeUsbmuxd, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``work(inspector)`` on a connected WebinspectorService; returns its result."""
    from pymobiledevice3.lockdown import create_using_usbmux
    from pymobiledevice3.services.webinspector import WebinspectorService

    async def main() -> Any:
        lockdown = await create_using_usbmux(serial=UDID, usbmux_address=usbmuxd.address)
        async with lockdown:
            inspector = WebinspectorService(lockdown)
            await inspector.connect()
            try:
                return await work(inspector)
            finally:
                await inspector.close()

    return asyncio.run(asyncio.wait_for(main(), timeout=15))


async def _pages(inspector: Any) -> list[Any]:
    return list(await inspector.get_open_application_pages(timeout=0.5))


def _in_session(work: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """``work(session)`` inside an InspectorSession on the first page listed."""

    async def run(inspector: Any) -> Any:
        [app_page] = await _pages(inspector)
        app, page = app_page.application, app_page.page
        session = await inspector.inspector_session(app, page)
        try:
            return await work(session)
        finally:
            session._receive_task.cancel()
            await inspector.teardown_inspector_socket(session.protocol.id_, app.id_, page.id_)

    return run


async def _snapshot(session: Any) -> dict[str, Any]:
    """Heap.snapshot through the session, unwrapped as WebKit wraps it: the target's reply is
    the JSON string ``params.message`` of a Target.dispatchMessageFromTarget event, and its
    ``result.snapshotData`` the snapshot's JSON string. (InspectorSession.heap_snapshot of
    pymobiledevice3 11.45 decodes that reply a second time and raises TypeError.)"""
    reply = await session.send_and_receive({"method": "Heap.snapshot", "params": {}})
    result = json.loads(reply["params"]["message"])["result"]
    assert isinstance(result["timestamp"], float)
    snapshot: dict[str, Any] = json.loads(result["snapshotData"])
    return snapshot


@pytest.mark.parametrize("version", ["14.8", "16.7.8", "17.5.1", "18.1"])
def test_web_inspector_lists_the_app_and_its_page_on_every_ios(
    usbmuxd: FakeUsbmuxd, home: Path, version: str
) -> None:
    from pymobiledevice3.services.webinspector import WirTypes

    phone = _phone(usbmuxd, version, developer_image=False)
    [listed] = _with_inspector(usbmuxd, _pages)
    app, page = listed.application, listed.page
    assert (app.bundle, app.name, app.pid, app.id_) == (
        "com.example.app",
        "App",
        APP_PID,
        f"PID:{APP_PID}",
    )
    assert app.ready and not app.proxy
    assert (page.id_, page.type_) == (1, WirTypes.WEB_PAGE)
    assert (page.web_url, page.web_title) == ("capacitor://localhost/", "App")
    assert sorted(phone.lockdownd.services.values()) == [NOTIFICATION_PROXY, WEBINSPECTOR]
    server = phone.lockdownd.webinspector_servers[0]
    assert server.selectors[0] == "_rpc_reportIdentifier:"
    assert "_rpc_getConnectedApplications:" in server.selectors
    assert "_rpc_forwardGetListing:" in server.selectors


def test_heap_gc_then_snapshot_sums_to_the_pages_heap_and_sees_it_grow(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    heaps = iter([12_345_678, 15_000_001])
    collections: list[float] = []

    async def growing() -> int:
        return next(heaps)

    async def gc() -> None:
        collections.append(time.monotonic())

    view = FakeWebView(url="https://app.example/", title="Home", heap=growing, gc=gc)
    _phone(usbmuxd, webviews=[view])

    async def two_snapshots(session: Any) -> list[dict[str, Any]]:
        snapshots = []
        for _ in range(2):
            await session.heap_gc()
            snapshots.append(await _snapshot(session))
        return snapshots

    snapshots = _with_inspector(usbmuxd, _in_session(two_snapshots))
    assert [sum(s["nodes"][1::4]) for s in snapshots] == [12_345_678, 15_000_001]
    first = snapshots[0]
    assert (first["version"], first["type"]) == (2, "Inspector")
    assert len(first["nodes"]) % 4 == 0 and len(first["edges"]) % 4 == 0
    assert first["nodeClassNames"][first["nodes"][2]] == "<root>"
    assert first["edgeTypes"] == ["Internal", "Property", "Index", "Variable"]
    assert len(collections) == 2
    assert view.commands == ["Heap.gc", "Heap.snapshot", "Heap.gc", "Heap.snapshot"]


def test_heap_gc_answers_and_emits_garbage_collected(usbmuxd: FakeUsbmuxd, home: Path) -> None:
    _phone(usbmuxd)

    async def gc(session: Any) -> tuple[Any, Any]:
        events: list[dict[str, Any]] = []
        session.response_methods["Heap.garbageCollected"] = events.append
        reply = await session.heap_gc()
        deadline = time.monotonic() + 2
        while not events and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # The reply to the outer Target.sendMessageToTarget (id 1) is answered {} as well.
        return json.loads(reply["params"]["message"]), (events, session.protocol.inspector)

    inner, (events, inspector) = _with_inspector(usbmuxd, _in_session(gc))
    assert inner == {"id": 1, "result": {}}
    [event] = events
    collection = event["params"]["collection"]
    assert collection["type"] == "full"
    assert collection["startTime"] <= collection["endTime"]
    assert inspector.wir_message_results[1] == {"id": 1, "result": {}}


def test_the_default_page_snapshots_a_constant_4_mb(usbmuxd: FakeUsbmuxd, home: Path) -> None:
    phone = _phone(usbmuxd)
    data = _with_inspector(usbmuxd, _in_session(_snapshot))
    assert sum(data["nodes"][1::4]) == HEAP_BYTES == 4_000_000
    assert phone.webviews[0].commands == ["Heap.snapshot"]


def test_unknown_methods_get_webkits_not_found_error(usbmuxd: FakeUsbmuxd, home: Path) -> None:
    _phone(usbmuxd)

    async def misuse(session: Any) -> Any:
        reply = await session.send_and_receive({"method": "Nosuch.method", "params": {}})
        return json.loads(reply["params"]["message"])

    unknown = _with_inspector(usbmuxd, _in_session(misuse))
    assert unknown["error"] == {
        "code": METHOD_NOT_FOUND,
        "message": "'Nosuch.method' was not found",
    }


def test_an_app_without_an_inspectable_web_view_is_listed_without_pages(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    hidden = FakeWebView(bundle_id="com.example.native", app_name="Native", pid=900,
                         inspectable=False)  # fmt: skip
    shown = FakeWebView(url="https://b.example/", title="B")
    second = FakeWebView(url="https://c.example/", title="C")
    _phone(usbmuxd, webviews=[hidden, shown, second])

    async def listing(inspector: Any) -> tuple[list[Any], dict[str, Any]]:
        return await _pages(inspector), dict(inspector.connected_application)

    pages, apps = _with_inspector(usbmuxd, listing)
    assert sorted(apps) == [f"PID:{APP_PID}", "PID:900"]
    assert apps["PID:900"].bundle == "com.example.native"
    assert [(p.application.pid, p.page.id_, p.page.web_url) for p in pages] == [
        (APP_PID, 1, "https://b.example/"),
        (APP_PID, 2, "https://c.example/"),
    ]


def test_with_web_inspector_off_the_client_raises_not_enabled_quickly(
    usbmuxd: FakeUsbmuxd, home: Path
) -> None:
    from pymobiledevice3.exceptions import WebInspectorNotEnabledError

    phone = _phone(usbmuxd, web_inspector=False)
    started = time.monotonic()
    with pytest.raises(WebInspectorNotEnabledError):
        _with_inspector(usbmuxd, _pages)
    assert time.monotonic() - started < 5  # not HANDSHAKE_RETRY_TIMEOUT (20 s)
    assert WEBINSPECTORD_DISABLED in phone.lockdownd.notifications
    assert phone.lockdownd.webinspector_servers == []


def test_the_notification_proxy_relays_what_is_posted(usbmuxd: FakeUsbmuxd, home: Path) -> None:
    from pymobiledevice3.lockdown import create_using_usbmux
    from pymobiledevice3.services.notification_proxy import NotificationProxyService

    phone = _phone(usbmuxd)

    async def main() -> Any:
        lockdown = await create_using_usbmux(serial=UDID, usbmux_address=usbmuxd.address)
        async with lockdown, NotificationProxyService(lockdown, timeout=2) as proxy:
            await proxy.notify_register_dispatch("com.example.ping")
            await proxy.notify_post("com.example.other")
            await proxy.notify_post("com.example.ping")
            return await anext(proxy.receive_notification())

    event = asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert event == {"Command": "RelayNotification", "Name": "com.example.ping"}
    assert phone.lockdownd.notifications == ["com.example.other", "com.example.ping"]


def test_heap_snapshot_sizes_sum_exactly_for_any_heap() -> None:
    for total in (0, 1, 99, 4_000_000, 987_654_321):
        snapshot = heap_snapshot(total)
        assert sum(snapshot["nodes"][1::4]) == total
        ids = snapshot["nodes"][0::4]
        edges = snapshot["edges"]
        assert {edges[i] for i in range(0, len(edges), 4)} <= set(ids)
        assert {edges[i + 1] for i in range(0, len(edges), 4)} == set(ids) - {0}
    with pytest.raises(ValueError):
        heap_snapshot(-1)
