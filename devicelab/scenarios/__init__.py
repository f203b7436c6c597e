"""The story's device scenarios: one module per scenario, one check id each (DESIGN.md).

:data:`ALL_SCENARIOS` lists every device check in the order a run reports them. A scenario
either runs (``run(ctx) -> Check``) or says why it cannot: not built yet, or not
applicable on this platform (the story's N/A cells). :func:`plan` turns a platform and
an optional ``--scenario`` selection into that list, refusing unknown ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from devicelab.errors import UnknownId
from devicelab.models import Check, TargetBook
from devicelab.scenarios import (
    background_disconnect,
    battery_drain,
    conversation_list_load,
    local_cache,
    media_transfer,
    memory,
    memory_leak,
    message_delivery,
    message_search,
    reconnect,
    subscription_setup,
)
from devicelab.scenarios.context import (
    LinkControl,
    ScenarioContext,
    ScenarioOptions,
    judged,
    skipped,
)
from devicelab.targets import column_for, resolve

__all__ = [
    "ALL_SCENARIOS",
    "LinkControl",
    "Scenario",
    "ScenarioContext",
    "ScenarioOptions",
    "check_ids",
    "judged",
    "not_applicable",
    "plan",
    "skipped",
]

Runner = Callable[[ScenarioContext], Check]
_PHONES = ("android", "ios")


@dataclass(frozen=True)
class Scenario:
    """One check of a device run: how it runs, or why it does not (``not_built``)."""

    id: str
    title: str
    category: str
    run: Runner | None = None
    not_built: str = ""
    platforms: tuple[str, ...] = ("web", "android", "ios")
    only_reason: str = ""

    def skip(self, reason: str) -> Check:
        """This scenario's check, skipped for ``reason``."""
        return skipped(self.id, self.title, self.category, reason)


ALL_SCENARIOS: list[Scenario] = [
    Scenario(message_delivery.CHECK_ID, message_delivery.TITLE, message_delivery.CATEGORY,
             message_delivery.run),
    Scenario(subscription_setup.CHECK_ID, subscription_setup.TITLE, subscription_setup.CATEGORY,
             subscription_setup.run),
    Scenario(conversation_list_load.CHECK_ID, conversation_list_load.TITLE,
             conversation_list_load.CATEGORY, conversation_list_load.run),
    Scenario(message_search.CHECK_ID, message_search.TITLE, message_search.CATEGORY,
             message_search.run),
    Scenario("image_upload_1mb", media_transfer.TITLES["image_upload_1mb"],
             media_transfer.CATEGORY, media_transfer.image_upload),
    Scenario("image_download_1mb", media_transfer.TITLES["image_download_1mb"],
             media_transfer.CATEGORY, media_transfer.image_download),
    Scenario("video_upload_10mb", media_transfer.TITLES["video_upload_10mb"],
             media_transfer.CATEGORY, media_transfer.video_upload),
    Scenario("video_download_10mb", media_transfer.TITLES["video_download_10mb"],
             media_transfer.CATEGORY, media_transfer.video_download),
    Scenario(reconnect.CHECK_ID, reconnect.TITLE, reconnect.CATEGORY, reconnect.run),
    Scenario("local_cache_query_50", local_cache.TITLES["local_cache_query_50"],
             local_cache.CATEGORY, local_cache.query_50),
    Scenario("local_cache_search", local_cache.TITLES["local_cache_search"],
             local_cache.CATEGORY, local_cache.search),
    Scenario("local_cache_conversations", local_cache.TITLES["local_cache_conversations"],
             local_cache.CATEGORY, local_cache.conversations),
    Scenario("memory_100_conversations", memory.TITLES["memory_100_conversations"],
             memory.CATEGORY, memory.conversations),
    Scenario("memory_1000_messages", memory.TITLES["memory_1000_messages"], memory.CATEGORY,
             memory.messages),
    Scenario(memory_leak.CHECK_ID, memory_leak.TITLE, memory_leak.CATEGORY, memory_leak.run),
    Scenario(battery_drain.CHECK_ID, battery_drain.TITLE, battery_drain.CATEGORY,
             battery_drain.run),
    Scenario(background_disconnect.CHECK_ID, background_disconnect.TITLE,
             background_disconnect.CATEGORY, background_disconnect.run, platforms=_PHONES,
             only_reason="the app going to the background is a phone behaviour (story 8.1.7, "
             "Background Sync: @capacitor/app background state)"),
]  # fmt: skip


def check_ids() -> list[str]:
    """Every device check id, in report order."""
    return [s.id for s in ALL_SCENARIOS]


def not_applicable(scenario: Scenario, platform: str, book: TargetBook) -> str:
    """Why ``scenario`` does not apply on ``platform`` ("" when it does).

    The story's N/A cells are read in the platform's own column (web: "Web (Desktop)"),
    so the web device skips the local-cache and battery checks on any network.
    """
    if platform not in scenario.platforms:
        return f"N/A on {platform}: {scenario.only_reason or 'a phone-only check'}"
    row = resolve(book, scenario.id, platform, column_for(platform, None))
    if row is not None and not row.applies:
        return f"N/A on {platform}: {row.source}"
    return ""


def plan(selected: Sequence[str] | None = None) -> list[Scenario]:
    """The scenarios of a run: all of them, or those ``selected`` (in report order).
    Raises UnknownId (with the closest id) for an id that is not a device check."""
    known = check_ids()
    for given in selected or []:
        if given not in known:
            _refuse_backend_id(given)
            raise UnknownId("scenario", given, known)
    if not selected:
        return list(ALL_SCENARIOS)
    return [s for s in ALL_SCENARIOS if s.id in selected]


def _refuse_backend_id(given: str) -> None:
    """Raise BadInput pointing at ``devicelab backend`` when ``given`` is one of its check
    ids (load_100, buffer_hit_ratio, ...): a device run has none of them, and the closest
    device id ('video_upload_10mb' for 'load_100') would send the user the wrong way."""
    import re

    from devicelab.errors import BadInput, DeviceLabError

    try:
        from backend_checks.check import check_ids as backend_ids

        backend = set(backend_ids())
    except (ImportError, DeviceLabError):  # a broken query file: the plain refusal
        return
    if given in backend or re.fullmatch(r"load_\d+", given):
        how = ("`devicelab backend load` (or `devicelab backend check --load 30s`)"
               if given.startswith("load_") else "`devicelab backend check`")  # fmt: skip
        raise BadInput(
            f"{given!r} is a backend check, not a device one",
            hint=f"run it with {how}; `devicelab run --scenario` takes the device checks",
        )
