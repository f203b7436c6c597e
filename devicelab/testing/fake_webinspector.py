"""The Web Inspector service (webinspectord) of a fake iPhone: the WIR protocol with
inspectable apps and their pages, enough for pymobiledevice3's ``WebinspectorService`` and
``InspectorSession`` to list pages, collect garbage and take heap snapshots.

devicelab.testing.fake_lockdownd starts one :class:`WebInspectorServer` per connection to
the port its ``StartService`` handed out for :data:`WEBINSPECTOR` (TLS from the first
byte, as for the diagnostics relay); :meth:`WebInspectorServer.serve` then reads and
writes WIR messages, length-prefixed plists ``{"__selector": ..., "__argument": {...}}``,
until the client goes.

What it serves, as webinspectord and WebKit do:

- ``_rpc_reportIdentifier:`` answers ``_rpc_reportCurrentState:`` (automation not
  available), ``_rpc_reportConnectedApplicationList:`` and
  ``_rpc_reportConnectedDriverList:``; ``_rpc_getConnectedApplications:`` answers the
  application list again. The apps are the phone's :class:`FakeWebView` grouped by pid
  (``PID:<pid>``, one page per web view, numbered from 1); an app whose web views are all
  ``inspectable=False`` is listed with no pages;
- ``_rpc_forwardGetListing:`` answers ``_rpc_applicationSentListing:`` (``WIRTypeWebPage``
  pages with their URL and title, and the connection inspecting one, if any);
- ``_rpc_forwardSocketSetup:`` attaches the sender to a page: a listing update follows,
  and the page, a multi-target page as in modern WebKit, sends ``Target.targetCreated``
  (target ``page-<id>``, type ``page``); ``_rpc_forwardDidClose:`` detaches it;
- ``_rpc_forwardSocketData:`` carries inspector-protocol JSON. At the page level
  ``Target.sendMessageToTarget`` is answered ``{}`` and the wrapped command's answer comes
  back as ``Target.dispatchMessageFromTarget``; the target answers ``Heap.enable`` /
  ``Heap.disable`` ``{}``, ``Heap.gc`` ``{}`` then a ``Heap.garbageCollected`` event
  (after awaiting the web view's ``gc``), ``Heap.snapshot`` a version 2 Inspector heap
  snapshot (:func:`heap_snapshot`) of ``heap()`` bytes; any other method gets WebKit's
  ``'<method>' was not found`` error (-32601).

Every command a page's target (or the page itself) received is recorded, oldest first, in
its web view's ``commands``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from devicelab.testing import usbmux_wire as wire
from devicelab.testing.fake_dtx import APP_PID

__all__ = [
    "HEAP_BYTES",
    "METHOD_NOT_FOUND",
    "WEBINSPECTOR",
    "WEBINSPECTORD_DISABLED",
    "FakeWebView",
    "WebInspectorServer",
    "heap_snapshot",
]

logger = logging.getLogger("devicelab.testing.fake_webinspector")

WEBINSPECTOR = "com.apple.webinspector"
#: What webinspectord posts (through the notification proxy) when Web Inspector is off.
WEBINSPECTORD_DISABLED = "com.apple.webinspectord.disabled"
#: The live JS heap of a default :class:`FakeWebView`, in bytes.
HEAP_BYTES = 4_000_000
#: WebKit's JSON-RPC error code for a method no agent implements.
METHOD_NOT_FOUND = -32601
_SERVER_ERROR = -32000
_EDGE_TYPES = ["Internal", "Property", "Index", "Variable"]
# The objects of a snapshot: (class name, share of the heap in %, parent index, edge type,
# edge name or index). The last one takes what the shares leave, so sizes sum exactly.
_OBJECTS: list[tuple[str, int, int, str, str | int]] = [
    ("Window", 5, 0, "Internal", 0),
    ("Object", 20, 1, "Property", "app"),
    ("Array", 30, 2, "Property", "items"),
    ("Function", 10, 1, "Property", "render"),
    ("Object", 15, 3, "Index", 0),
    ("string", 0, 5, "Property", "name"),
]


async def _constant_heap() -> int:
    return HEAP_BYTES


async def _no_gc() -> None:
    return None


@dataclass
class FakeWebView:
    """One inspectable web view of an app on the fake phone (one WIR page).

    Web views with the same ``pid`` are pages of one app. ``heap`` returns the live JS
    heap in bytes, awaited for every ``Heap.snapshot`` (a test can make it grow); ``gc`` is
    awaited for every ``Heap.gc``; both run on the fake usbmuxd's loop, in its thread.
    ``inspectable=False`` keeps the web view out of the app's listing (the app is still
    listed). ``inspected_by`` is the connection of another inspector attached to the page
    (Safari's Web Inspector on a Mac, another Appium session): the listing names it, as
    WebKit serves one inspector per page. ``commands`` records the inspector methods the
    page received, oldest first.
    """

    bundle_id: str = "com.example.app"
    app_name: str = "App"
    pid: int = APP_PID
    url: str = "capacitor://localhost/"
    title: str = "App"
    heap: Callable[[], Awaitable[int]] = _constant_heap
    gc: Callable[[], Awaitable[None]] = _no_gc
    inspectable: bool = True
    inspected_by: str = ""
    commands: list[str] = field(default_factory=list, compare=False)

    @property
    def app_id(self) -> str:
        """The app's WIRApplicationIdentifierKey (``PID:<pid>``)."""
        return f"PID:{self.pid}"


def heap_snapshot(total: int) -> dict[str, Any]:
    """WebKit's Inspector heap snapshot (version 2) of a heap of ``total`` bytes.

    Returns the JSON object (nodes are ``[id, size, classNameIndex, flags]`` quadruples,
    edges ``[fromId, toId, edgeTypeIndex, data]``): a ``<root>`` of size 0 and a window
    holding a few objects whose sizes sum exactly to ``total``. Raises ValueError when
    ``total`` is negative.
    """
    if total < 0:
        raise ValueError(f"a heap of {total} bytes")
    class_names = ["<root>"]
    edge_names: list[str] = []
    nodes = [0, 0, 0, 0]
    edges: list[int] = []
    left = total
    for number, (name, share, parent, edge_type, edge) in enumerate(_OBJECTS, start=1):
        size = total * share // 100 if number < len(_OBJECTS) else left
        left -= size
        if name not in class_names:
            class_names.append(name)
        nodes += [number, size, class_names.index(name), 0]
        # Property and Variable edges point into edgeNames; Index edges carry the index.
        if isinstance(edge, str) and edge not in edge_names:
            edge_names.append(edge)
        data = edge_names.index(edge) if isinstance(edge, str) else edge
        edges += [parent, number, _EDGE_TYPES.index(edge_type), data]
    return {
        "version": 2,
        "type": "Inspector",
        "nodes": nodes,
        "nodeClassNames": class_names,
        "edges": edges,
        "edgeTypes": list(_EDGE_TYPES),
        "edgeNames": edge_names,
    }


class _Session:
    """A sender attached to a page through ``_rpc_forwardSocketSetup:``."""

    def __init__(self, app_id: str, page_id: int, view: FakeWebView) -> None:
        self.app_id = app_id
        self.page_id = page_id
        self.view = view
        self.target_id = f"page-{page_id}"


class WebInspectorServer:
    """webinspectord for one service connection (see the module docstring).

    ``webviews`` are the phone's web views, read once per request, so a test may change
    them between listings. Observable: ``connection_id`` (the client's, once it reported
    it) and ``selectors`` (every WIR selector received, oldest first).
    """

    def __init__(self, webviews: Callable[[], Sequence[FakeWebView]]) -> None:
        self.webviews = webviews
        self.connection_id: str | None = None
        self.selectors: list[str] = []
        self._sessions: dict[str, _Session] = {}  # sender key -> the page it inspects

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer WIR messages until the client goes (raises IncompleteReadError then, as
        the other services' loops do)."""
        while True:
            message = await wire.read_lockdown(reader)
            selector = str(message.get("__selector", ""))
            argument = message.get("__argument")
            self.selectors.append(selector)
            replies = await self._answer(selector, argument if isinstance(argument, dict) else {})
            for reply_selector, reply_argument in replies:
                wire.write_lockdown(
                    writer, {"__selector": reply_selector, "__argument": reply_argument}
                )
            await writer.drain()

    # --- the apps and pages -------------------------------------------------------------
    def _apps(self) -> dict[str, list[FakeWebView]]:
        apps: dict[str, list[FakeWebView]] = {}
        for view in self.webviews():
            apps.setdefault(view.app_id, []).append(view)
        return apps

    def _pages(self, app_id: str) -> dict[int, FakeWebView]:
        views = [v for v in self._apps().get(app_id, []) if v.inspectable]
        return dict(enumerate(views, start=1))

    def _application_list(self) -> dict[str, Any]:
        listed: dict[str, Any] = {}
        for app_id, views in self._apps().items():
            listed[app_id] = {
                "WIRApplicationIdentifierKey": app_id,
                "WIRApplicationBundleIdentifierKey": views[0].bundle_id,
                "WIRApplicationNameKey": views[0].app_name,
                "WIRIsApplicationActiveKey": 1,
                "WIRIsApplicationProxyKey": False,
                "WIRIsApplicationReadyKey": True,
                "WIRAutomationAvailabilityKey": "WIRAutomationAvailabilityNotAvailable",
            }
        return {"WIRApplicationDictionaryKey": listed}

    def _listing(self, app_id: str) -> dict[str, Any]:
        inspected = {(s.app_id, s.page_id) for s in self._sessions.values()}
        listing: dict[str, Any] = {}
        for page_id, view in self._pages(app_id).items():
            page: dict[str, Any] = {
                "WIRPageIdentifierKey": page_id,
                "WIRTypeKey": "WIRTypeWebPage",
                "WIRURLKey": view.url,
                "WIRTitleKey": view.title,
            }
            if (app_id, page_id) in inspected and self.connection_id is not None:
                page["WIRConnectionIdentifierKey"] = self.connection_id
            elif view.inspected_by:
                page["WIRConnectionIdentifierKey"] = view.inspected_by
            listing[str(page_id)] = page
        return {"WIRApplicationIdentifierKey": app_id, "WIRListingKey": listing}

    # --- the WIR messages ---------------------------------------------------------------
    async def _answer(
        self, selector: str, argument: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        app_id = str(argument.get("WIRApplicationIdentifierKey", ""))
        sender = str(argument.get("WIRSenderKey", ""))
        if selector == "_rpc_reportIdentifier:":
            self.connection_id = str(argument.get("WIRConnectionIdentifierKey", ""))
            state = {"WIRAutomationAvailabilityKey": "WIRAutomationAvailabilityNotAvailable"}
            return [
                ("_rpc_reportCurrentState:", state),
                ("_rpc_reportConnectedApplicationList:", self._application_list()),
                ("_rpc_reportConnectedDriverList:", {"WIRDriverDictionaryKey": {}}),
            ]
        if selector == "_rpc_getConnectedApplications:":
            return [("_rpc_reportConnectedApplicationList:", self._application_list())]
        if selector == "_rpc_forwardGetListing:" and app_id in self._apps():
            return [("_rpc_applicationSentListing:", self._listing(app_id))]
        if selector == "_rpc_forwardSocketSetup:":
            return self._setup(app_id, argument.get("WIRPageIdentifierKey"), sender)
        if selector == "_rpc_forwardDidClose:" and sender in self._sessions:
            del self._sessions[sender]
            return [("_rpc_applicationSentListing:", self._listing(app_id))]
        if selector == "_rpc_forwardSocketData:" and sender in self._sessions:
            session = self._sessions[sender]
            try:
                message = json.loads(argument.get("WIRSocketDataKey") or b"")
            except (TypeError, ValueError):
                return []  # WebKit drops what does not parse
            return [self._data(session, sender, m) for m in await self._page(session, message)]
        logger.debug("fake webinspectord ignores %s", selector)
        return []

    def _setup(self, app_id: str, page_id: object, sender: str) -> list[tuple[str, Any]]:
        view = self._pages(app_id).get(page_id) if isinstance(page_id, int) else None
        if view is None or not isinstance(page_id, int) or not sender:
            return []  # webinspectord ignores a setup for a page that is not there
        session = _Session(app_id, page_id, view)
        self._sessions[sender] = session
        created = {
            "method": "Target.targetCreated",
            "params": {
                "targetInfo": {
                    "targetId": session.target_id,
                    "type": "page",
                    "isProvisional": False,
                    "isPaused": False,
                }
            },
        }
        return [
            ("_rpc_applicationSentListing:", self._listing(app_id)),
            self._data(session, sender, created),
        ]

    @staticmethod
    def _data(session: _Session, sender: str, message: dict[str, Any]) -> tuple[str, Any]:
        return (
            "_rpc_applicationSentData:",
            {
                "WIRApplicationIdentifierKey": session.app_id,
                "WIRDestinationKey": sender,
                "WIRMessageDataKey": json.dumps(message).encode(),
            },
        )

    # --- the inspector protocol ---------------------------------------------------------
    async def _page(self, session: _Session, message: Any) -> list[dict[str, Any]]:
        """The messages the page sends for one the frontend sent it."""
        if not isinstance(message, dict):
            return []
        method, message_id = str(message.get("method", "")), message.get("id")
        params = _params(message)
        if method != "Target.sendMessageToTarget":
            session.view.commands.append(method)
            if method in ("Inspector.enable", "Inspector.initialized", "Target.setPauseOnStart"):
                return [{"id": message_id, "result": {}}]
            return [_not_found(message_id, method)]
        if params.get("targetId") != session.target_id:
            error = {"code": _SERVER_ERROR, "message": "Missing target for given targetId"}
            return [{"id": message_id, "error": error}]
        try:
            inner = json.loads(str(params.get("message", "")))
        except ValueError:
            error = {"code": -32700, "message": "Message must be in JSON format"}
            return [{"id": message_id, "error": error}]
        # The page answers the outer command first; the target's answer crosses to it later.
        replies: list[dict[str, Any]] = [{"id": message_id, "result": {}}]
        for reply in await self._target(session.view, inner):
            wrapped = {"targetId": session.target_id, "message": json.dumps(reply)}
            replies.append({"method": "Target.dispatchMessageFromTarget", "params": wrapped})
        return replies

    async def _target(self, view: FakeWebView, message: Any) -> list[dict[str, Any]]:
        """The messages the page's target sends for one command."""
        if not isinstance(message, dict):
            return []
        method, message_id = str(message.get("method", "")), message.get("id")
        view.commands.append(method)
        if method in ("Heap.enable", "Heap.disable"):
            return [{"id": message_id, "result": {}}]
        if method == "Heap.gc":
            start = time.monotonic()
            await view.gc()
            collection = {"type": "full", "startTime": start, "endTime": time.monotonic()}
            return [
                {"id": message_id, "result": {}},
                {"method": "Heap.garbageCollected", "params": {"collection": collection}},
            ]
        if method == "Heap.snapshot":
            snapshot = json.dumps(heap_snapshot(await view.heap()), separators=(",", ":"))
            result = {"timestamp": time.monotonic(), "snapshotData": snapshot}
            return [{"id": message_id, "result": result}]
        return [_not_found(message_id, method)]


def _not_found(message_id: Any, method: str) -> dict[str, Any]:
    """WebKit's answer to a method no agent implements."""
    error = {"code": METHOD_NOT_FOUND, "message": f"'{method}' was not found"}
    return {"id": message_id, "error": error}


def _params(message: dict[str, Any]) -> dict[str, Any]:
    """A command's params ({} when it has none, or they are not an object)."""
    params = message.get("params")
    return params if isinstance(params, dict) else {}
