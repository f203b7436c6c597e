"""The realtime checks against the reference server: sane Check objects, and the preflight."""

from __future__ import annotations

import asyncio

import pytest

from backend_checks.realtime_checks import (
    PLANS,
    PlanLimits,
    RealtimeLoad,
    SupabaseProject,
    preflight,
    realtime_checks,
)
from backend_checks.reference.realtime_client import Subscriber
from backend_checks.reference.server import ReferenceServer
from devicelab.errors import UnsafeActionRefused


def project(server: ReferenceServer) -> SupabaseProject:
    return SupabaseProject(url=server.url, anon_key=server.anon_key, kind="reference",
                           email="testuser1@example.com", password="password123")  # fmt: skip


def test_realtime_checks_measure_setup_and_delivery(server: ReferenceServer) -> None:
    load = RealtimeLoad(subscribers=100, inserts=10, rate_per_s=20, cold_inserts=1, idle_s=0.3)
    setup, broadcast = realtime_checks(project(server), load, PLANS["pro"])

    # The verdicts follow the values; the values themselves depend on the machine's load,
    # so they are not asserted against the targets here (bench/realtime.py measures).
    assert setup.id == "subscription_setup" and setup.status in ("pass", "fail"), setup.reason
    assert setup.stat == "p95" and setup.unit == "ms" and len(setup.samples) == 100
    assert setup.value is not None and setup.value > 0
    assert setup.target is not None and setup.target.value == 1000
    assert (setup.status == "pass") == (setup.value < 1000)
    assert setup.summary is not None and setup.summary.p95 == setup.value

    assert broadcast.id == "realtime_broadcast" and broadcast.status in ("pass", "fail")
    ev = broadcast.evidence
    assert ev["deliveries_received"] == ev["deliveries_expected"] == 100 * 11
    assert ev["warm"]["count"] == 1000 and ev["cold"]["count"] == 100
    assert broadcast.value == ev["warm"]["p95_ms"] and broadcast.value > 0
    assert (broadcast.status == "pass") == (broadcast.value < 300)
    assert ev["warm"]["p50_ms"] <= ev["warm"]["p95_ms"] <= ev["warm"]["p99_ms"]
    # The samples are the warm deliveries themselves: the summary is theirs.
    assert len(broadcast.samples) == 100 * 10
    assert broadcast.summary is not None and broadcast.summary.p95 == broadcast.value
    assert ev["disconnects"] == 0 and ev["disconnect_reasons"] == []


def test_subscribers_that_drop_during_the_window_fail_the_broadcast(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three subscribers lose their socket right after joining, as a flaky network would
    # drop them: the story's "connection stability (no disconnects)" must fail.
    started = Subscriber.start
    lost: list[int] = []

    def start_then_drop(sub: Subscriber) -> None:
        started(sub)
        if len(lost) < 3:
            lost.append(1)
            asyncio.get_running_loop().create_task(sub.ws.close())

    monkeypatch.setattr(Subscriber, "start", start_then_drop)
    load = RealtimeLoad(subscribers=10, inserts=3, rate_per_s=20, cold_inserts=0, idle_s=0.1,
                        timeout_s=3)  # fmt: skip
    _setup, broadcast = realtime_checks(project(server), load, PLANS["pro"])
    assert broadcast.status == "fail"
    assert broadcast.evidence["disconnects"] == 3
    assert broadcast.reason.startswith("3 of 10 subscribers disconnected during the window")


def test_preflight_refuses_what_the_plan_forbids() -> None:
    with pytest.raises(UnsafeActionRefused, match="200 concurrent"):
        preflight(RealtimeLoad(subscribers=201), PLANS["free"])
    # 100 subscribers x 10 inserts/s = 1,000 messages/s: ten times the free plan's quota.
    with pytest.raises(UnsafeActionRefused, match="1000 messages/s") as refused:
        preflight(RealtimeLoad(subscribers=100, rate_per_s=10), PLANS["free"])
    assert refused.value.exit_code == 2 and "at most 10 subscribers" in str(refused.value)
    assert "--subscribers 10" in refused.value.hint
    preflight(RealtimeLoad(subscribers=1000, rate_per_s=2), PLANS["pro"])
    preflight(RealtimeLoad(subscribers=10_000, rate_per_s=100), None)  # no stated plan
    custom = PlanLimits(name="mine", max_connections=50, max_messages_per_s=1000)
    with pytest.raises(UnsafeActionRefused, match="mine"):
        preflight(RealtimeLoad(subscribers=60), custom)
