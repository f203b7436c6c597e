"""The scenario plan (ids, order, N/A and not-built reasons) and the lab's teardown."""

from __future__ import annotations

import pytest

from devicelab.config import load_targets
from devicelab.errors import BadInput, UnknownId
from devicelab.lab import Lab
from devicelab.scenarios import ALL_SCENARIOS, check_ids, not_applicable, plan
from devicelab.teardown import Teardown

DESIGN_DEVICE_IDS = [
    "message_delivery", "subscription_setup", "conversation_list_load", "message_search",
    "image_upload_1mb", "image_download_1mb", "video_upload_10mb", "video_download_10mb",
    "reconnect", "local_cache_query_50", "local_cache_search", "local_cache_conversations",
    "memory_100_conversations", "memory_1000_messages", "memory_leak", "battery_drain",
    "background_disconnect",
]  # fmt: skip


def test_every_device_check_of_the_design_in_order() -> None:
    assert check_ids() == DESIGN_DEVICE_IDS


def test_a_selection_keeps_report_order_and_refuses_unknown_ids() -> None:
    assert [s.id for s in plan(["reconnect", "message_delivery"])] == [
        "message_delivery",
        "reconnect",
    ]
    with pytest.raises(UnknownId, match="did you mean 'reconnect'"):
        plan(["reconect"])


def test_na_cells_are_read_in_the_platforms_own_column() -> None:
    book = load_targets()
    by_id = {s.id: s for s in ALL_SCENARIOS}
    for cid in ("local_cache_query_50", "local_cache_search", "battery_drain"):
        assert not_applicable(by_id[cid], "web", book).startswith("N/A on web")
        assert not_applicable(by_id[cid], "android", book) == ""
    assert "phone" in not_applicable(by_id["background_disconnect"], "web", book)
    assert not_applicable(by_id["message_delivery"], "web", book) == ""


def test_an_offline_network_is_refused_before_anything_starts() -> None:
    with pytest.raises(BadInput, match="offline"):
        Lab("web", "offline")


def test_the_column_follows_the_network() -> None:
    assert Lab("web", "4g").column == "4g"
    assert Lab("web", "none").column == "web"


def test_teardown_runs_newest_first_and_goes_on_after_a_failure() -> None:
    said: list[str] = []
    done: list[str] = []
    teardown = Teardown(said.append)
    teardown.push("backend", lambda: done.append("backend"))

    def broken() -> None:
        raise RuntimeError("stuck")

    teardown.push("proxy", broken)
    teardown.push("browser", lambda: done.append("browser"))
    teardown.run()
    assert done == ["browser", "backend"]
    assert said == ["warning: stopping the proxy failed: stuck"]


def test_a_ctrl_c_during_teardown_lets_the_rest_stop_then_ends_the_command_as_interrupted() -> None:
    # It was swallowed: the run exited 0 with its normal summary, after a Ctrl-C.
    done: list[str] = []
    said: list[str] = []
    teardown = Teardown(said.append)
    teardown.push("backend", lambda: done.append("backend"))

    def interrupted() -> None:
        raise KeyboardInterrupt

    teardown.push("app session", interrupted)
    teardown.push("browser", lambda: done.append("browser"))
    with pytest.raises(KeyboardInterrupt):
        teardown.run()
    assert done == ["browser", "backend"]
    assert said == ["warning: stopping the app session was interrupted"]


def test_the_background_time_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from devicelab.errors import ConfigError
    from devicelab.scenarios.background_disconnect import BACKGROUND_S, BackgroundOptions

    assert BackgroundOptions.from_env().background_s == BACKGROUND_S
    monkeypatch.setenv("DEVICELAB_BACKGROUND_S", "12.5")
    assert BackgroundOptions.from_env().background_s == 12.5
    monkeypatch.setenv("DEVICELAB_BACKGROUND_S", "-1")
    with pytest.raises(ConfigError, match="bad background option") as raised:
        BackgroundOptions.from_env()
    assert "DEVICELAB_BACKGROUND_S" in raised.value.hint
