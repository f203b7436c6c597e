"""Realtime checks: ``subscription_setup`` and ``realtime_broadcast``, on any Supabase API.

They run the same against the reference server and a real project (URL, anon key, a test
user). N subscribers (websockets of this process, signed in as the test user, so RLS
applies) join one postgres_changes binding on ``messages`` of one of the user's
conversations; then the user inserts M messages through REST. Every delivery's latency is
``arrival - insert start`` on one clock (``time.perf_counter`` of this process), recorded
in HDR histograms; the first inserts after a quiet spell (``cold``: hosted Realtime polls
its slot every 100 ms and backs off to 500 ms when idle) are kept apart from the steady
stream (``warm``).

Before any socket opens, :func:`preflight` compares the run with the plan limits the user
states (concurrent connections, messages per second; one insert fanned out to N
subscribers is N messages) and refuses a run that would exceed them, so a quota is never
reported as slowness.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from typing import Any, Final, Literal

import aiohttp
from hdrh.histogram import HdrHistogram
from pydantic import BaseModel, ConfigDict, Field

from backend_checks.reference.realtime_client import (
    JoinTiming,
    RealtimeRefused,
    Subscriber,
    websocket_url,
)
from devicelab.errors import BackendUnavailable, UnsafeActionRefused
from devicelab.models import Check, Stats, summarize
from devicelab.targets import backend_target

__all__ = [
    "PLANS",
    "PlanLimits",
    "RealtimeLoad",
    "Session",
    "SupabaseProject",
    "preflight",
    "realtime_checks",
    "run_realtime_checks",
    "sign_in",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SupabaseProject(_Model):
    """Where the checks run: a Supabase API (real or reference) and a test user."""

    url: str = Field(description="API base URL, e.g. https://abc.supabase.co")
    anon_key: str = Field(repr=False)
    email: str = Field(description="a test user who is in at least one conversation")
    password: str = Field(repr=False)
    kind: Literal["reference", "supabase"] = "supabase"


class PlanLimits(_Model):
    """Realtime quotas of a plan, as the user states them."""

    name: str
    max_connections: int = Field(gt=0)
    max_messages_per_s: float = Field(gt=0)
    source: str = "stated by the user"


#: Supabase's published Realtime quotas (docs "Realtime Limits"; see shared REFERENCE.md).
PLANS: Final = {
    "free": PlanLimits(name="free", max_connections=200, max_messages_per_s=100,
                       source="Supabase Realtime limits: Free"),
    "pro-spend-cap": PlanLimits(name="pro-spend-cap", max_connections=500,
                                max_messages_per_s=500,
                                source="Supabase Realtime limits: Pro (spend cap on)"),
    "pro": PlanLimits(name="pro", max_connections=10_000, max_messages_per_s=2_500,
                      source="Supabase Realtime limits: Pro (spend cap off)"),
}  # fmt: skip


class RealtimeLoad(_Model):
    """How hard the realtime checks push: subscribers, inserts, rate and cold spells."""

    subscribers: int = Field(default=100, ge=1, le=10_000)
    inserts: int = Field(default=30, ge=1, description="warm inserts, at `rate_per_s`")
    rate_per_s: float = Field(default=10.0, gt=0, le=1000)
    cold_inserts: int = Field(default=3, ge=0, description="inserts after `idle_s` quiet")
    idle_s: float = Field(default=2.0, ge=0)
    join_concurrency: int = Field(default=50, ge=1)
    timeout_s: float = Field(default=10.0, gt=0, description="join and delivery timeout")


def preflight(load: RealtimeLoad, plan: PlanLimits | None) -> None:
    """Refuse a run that would exceed the plan's quotas (exit 2, nothing sent).

    Raises UnsafeActionRefused naming the limit, the planned load and what to change.
    """
    if plan is None:
        return
    if load.subscribers > plan.max_connections:
        raise UnsafeActionRefused(
            f"{load.subscribers} subscribers exceed the {plan.name} plan's "
            f"{plan.max_connections} concurrent Realtime connections ({plan.source})",
            hint=f"use --subscribers {plan.max_connections} or less, or state a larger plan",
        )
    per_second = load.subscribers * load.rate_per_s
    if per_second > plan.max_messages_per_s:
        most = int(plan.max_messages_per_s // load.rate_per_s)
        raise UnsafeActionRefused(
            f"{load.subscribers} subscribers x {load.rate_per_s:g} inserts/s = "
            f"{per_second:g} messages/s exceed the {plan.name} plan's "
            f"{plan.max_messages_per_s:g} messages/s ({plan.source}); the quota would be "
            "measured as latency",
            hint=f"use at most {most} subscribers at this rate, or a lower --rate",
        )


class Session(_Model):
    """A signed-in test user: the JWT and the ids the checks write with."""

    access_token: str = Field(repr=False)
    user_id: str
    conversation_id: str


async def sign_in(http: aiohttp.ClientSession, project: SupabaseProject) -> Session:
    """Sign the test user in (password grant) and pick one of their conversations.

    Raises BackendUnavailable when the API cannot be reached, the sign-in is refused or the
    user is in no conversation.
    """
    base = project.url.rstrip("/")
    headers = {"apikey": project.anon_key}
    try:
        async with http.post(
            f"{base}/auth/v1/token?grant_type=password",
            json={"email": project.email, "password": project.password},
            headers=headers,
        ) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise BackendUnavailable(
                    f"sign-in of {project.email} refused ({resp.status}): {body}",
                    hint="check the test user's email and password",
                )
        token, user_id = body["access_token"], body["user"]["id"]
        headers["Authorization"] = f"Bearer {token}"
        async with http.get(
            f"{base}/rest/v1/conversations?select=id&limit=1", headers=headers
        ) as resp:
            rows = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, KeyError, TypeError) as exc:
        raise BackendUnavailable(f"cannot reach {base}: {exc}", hint="check the URL") from exc
    if not isinstance(rows, list) or not rows:
        raise BackendUnavailable(
            f"{project.email} is in no conversation",
            hint="seed data with `devicelab backend datagen`",
        )
    return Session(access_token=token, user_id=user_id, conversation_id=rows[0]["id"])


class _Deliveries:
    """Insert start times and delivery latencies (µs) in HDR histograms, cold and warm."""

    def __init__(self, run_id: str) -> None:
        self.marker = f"dlrt-{run_id}-"
        self.started: dict[int, tuple[float, bool]] = {}
        self.received: dict[int, int] = defaultdict(int)
        self.hist = {kind: HdrHistogram(1, 120_000_000, 3) for kind in ("cold", "warm")}
        self.per_insert_ms: dict[int, list[float]] = defaultdict(list)

    def content(self, seq: int) -> str:
        return f"{self.marker}{seq} realtime check message"

    def on_change(self, text: str, arrived: float) -> None:
        at = text.find(self.marker)
        if at < 0:
            return
        start = at + len(self.marker)
        end = start
        while end < len(text) and text[end].isdigit():
            end += 1
        seq = int(text[start:end])
        sent = self.started.get(seq)
        if sent is None:
            return
        micros = max(1, int((arrived - sent[0]) * 1_000_000))
        self.hist["cold" if sent[1] else "warm"].record_value(micros)
        self.received[seq] += 1
        self.per_insert_ms[seq].append(micros / 1000)

    def summary(self, kind: str) -> dict[str, float | int]:
        hist = self.hist[kind]
        if hist.get_total_count() == 0:
            return {"count": 0}
        return {
            "count": int(hist.get_total_count()),
            **{f"p{p}_ms": hist.get_value_at_percentile(p) / 1000 for p in (50, 95, 99)},
            "min_ms": hist.get_min_value() / 1000,
            "max_ms": hist.get_max_value() / 1000,
            "mean_ms": hist.get_mean_value() / 1000,
        }


async def _insert(
    http: aiohttp.ClientSession, project: SupabaseProject, session: Session, content: str
) -> None:
    headers = {
        "apikey": project.anon_key,
        "Authorization": f"Bearer {session.access_token}",
        "Prefer": "return=minimal",
    }
    row = {"conversation_id": session.conversation_id, "sender_id": session.user_id}
    row["content"] = content
    async with http.post(
        f"{project.url.rstrip('/')}/rest/v1/messages", json=row, headers=headers
    ) as resp:
        if resp.status >= 300:
            raise BackendUnavailable(f"insert refused ({resp.status}): {await resp.text()}")


async def _open_subscribers(
    http: aiohttp.ClientSession,
    project: SupabaseProject,
    session: Session,
    load: RealtimeLoad,
    deliveries: _Deliveries,
) -> tuple[list[Subscriber], list[Subscriber], list[JoinTiming], list[str]]:
    """(every subscriber connected, those that joined, their join timings, join errors)."""
    url = websocket_url(project.url, project.anon_key)
    binding = {"event": "INSERT", "schema": "public", "table": "messages",
               "filter": f"conversation_id=eq.{session.conversation_id}"}  # fmt: skip
    gate = asyncio.Semaphore(load.join_concurrency)
    subs: list[Subscriber] = []
    joined: list[Subscriber] = []
    timings: list[JoinTiming] = []
    errors: list[str] = []

    async def one(i: int) -> None:
        async with gate:
            try:
                sub = await Subscriber.connect(http, url, on_change=deliveries.on_change)
                subs.append(sub)
                timing = await sub.join(f"dl-check-{i}", postgres_changes=[binding],
                                        access_token=session.access_token,
                                        timeout=load.timeout_s)  # fmt: skip
            except (aiohttp.ClientError, RealtimeRefused, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            timings.append(timing)
            joined.append(sub)
            sub.start()

    await asyncio.gather(*(one(i) for i in range(load.subscribers)))
    return subs, joined, timings, errors


async def _drive_inserts(
    http: aiohttp.ClientSession,
    project: SupabaseProject,
    session: Session,
    load: RealtimeLoad,
    deliveries: _Deliveries,
    expected_each: int,
) -> None:
    async def fire(seq: int, cold: bool) -> None:
        deliveries.started[seq] = (time.perf_counter(), cold)
        await _insert(http, project, session, deliveries.content(seq))

    async def all_arrived(seqs: range, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(deliveries.received[s] >= expected_each for s in seqs):
                return
            await asyncio.sleep(0.01)

    for seq in range(load.cold_inserts):
        await asyncio.sleep(load.idle_s)
        await fire(seq, cold=True)
        await all_arrived(range(seq, seq + 1), load.timeout_s)
    first = load.cold_inserts
    start = time.perf_counter()
    tasks = []
    try:
        for i in range(load.inserts):
            delay = start + i / load.rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(first + i, cold=False)))
        await asyncio.gather(*tasks)
    finally:
        # Stopped midway (Ctrl-C, a failed insert): the inserts still in flight are
        # cancelled and awaited, or each failing one later prints "Task exception was
        # never retrieved" with a traceback.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await all_arrived(range(first, first + load.inserts), load.timeout_s)


async def run_realtime_checks(
    project: SupabaseProject, load: RealtimeLoad, plan: PlanLimits | None = None
) -> list[Check]:
    """Run both realtime checks; returns [subscription_setup, realtime_broadcast].

    Raises UnsafeActionRefused (before connecting) when the plan forbids the load, and
    BackendUnavailable when the API cannot be reached or the test user cannot sign in.
    """
    preflight(load, plan)
    deliveries = _Deliveries(secrets.token_hex(4))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        session = await sign_in(http, project)
        opened = await _open_subscribers(http, project, session, load, deliveries)
        subs, joined, timings, errors = opened
        try:
            if timings:
                await _drive_inserts(http, project, session, load, deliveries, len(timings))
            # The story's "connection stability (no disconnects)": a subscriber whose socket
            # closed, or whose channel the server closed or errored, before we closed it.
            dropped = [sub.closed_reason or "socket closed" for sub in joined
                       if sub.ws.closed or sub.closed_reason]  # fmt: skip
        finally:
            await asyncio.gather(*(sub.close() for sub in subs))
    evidence = {"subscribers": load.subscribers, "joined": len(timings), "plan": plan and plan.name,
                "backend": project.kind, "join_errors": errors[:5]}  # fmt: skip
    return [
        _setup_check(timings, errors, evidence),
        _broadcast_check(deliveries, load, timings, evidence, dropped),
    ]


def realtime_checks(
    project: SupabaseProject, load: RealtimeLoad, plan: PlanLimits | None = None
) -> list[Check]:
    """Blocking form of :func:`run_realtime_checks` (same returns and raises)."""
    return asyncio.run(run_realtime_checks(project, load, plan))


def _setup_check(timings: list[JoinTiming], errors: list[str], evidence: dict[str, Any]) -> Check:
    setup_target = backend_target("subscription_setup")
    setup_ms = [t.subscribed_s * 1000 for t in timings if t.subscribed_s is not None]
    reply_ms = [t.reply_s * 1000 for t in timings]
    summary = summarize(setup_ms)
    replies = summarize(reply_ms)
    check = Check(
        id="subscription_setup",
        title="Realtime subscription setup (join sent -> 'Subscribed to PostgreSQL')",
        category="realtime",
        status="error",
        unit="ms",
        stat="p95",
        target=setup_target,
        samples=setup_ms,
        summary=summary,
        evidence={**evidence, "phx_reply_p95_ms": replies.p95 if replies else None},
    )
    if summary is None:
        return check.model_copy(
            update={"reason": "no subscription came up: " + "; ".join(errors[:3])}
        )
    status = "pass" if summary.p95 < setup_target.value else "fail"
    reason = f"{len(errors)} of {evidence['subscribers']} joins failed" if errors else ""
    return check.model_copy(
        update={"status": "error" if errors else status, "value": summary.p95, "reason": reason}
    )


def _broadcast_check(
    deliveries: _Deliveries,
    load: RealtimeLoad,
    timings: list[JoinTiming],
    evidence: dict[str, Any],
    dropped: list[str],
) -> Check:
    broadcast_target = backend_target("realtime_broadcast")
    expected = len(timings) * (load.inserts + load.cold_inserts)
    received = sum(deliveries.received.values())
    warm, cold = deliveries.summary("warm"), deliveries.summary("cold")
    per_insert = [max(v) for _, v in sorted(deliveries.per_insert_ms.items())]
    check = Check(
        id="realtime_broadcast",
        title=f"Realtime delivery latency, {len(timings)} subscribers (insert -> change)",
        category="realtime",
        status="error",
        unit="ms",
        stat="p95",
        target=broadcast_target,
        samples=per_insert,
        evidence={
            **evidence,
            "warm": warm,
            "cold": cold,
            "inserts": load.inserts,
            "cold_inserts": load.cold_inserts,
            "rate_per_s": load.rate_per_s,
            "messages_per_s": len(timings) * load.rate_per_s,
            "deliveries_expected": expected,
            "deliveries_received": received,
            "samples_are": "per insert: the slowest subscriber's latency",
            "disconnects": len(dropped),
            "disconnect_reasons": sorted(set(dropped))[:5],
        },
    )
    if not timings or warm.get("count", 0) == 0:
        return check.model_copy(update={"reason": "no change was delivered"})
    summary = Stats(min=warm["min_ms"], p50=warm["p50_ms"], p95=warm["p95_ms"],
                    max=warm["max_ms"], mean=warm["mean_ms"])  # fmt: skip
    value = float(warm["p95_ms"])
    status: Literal["pass", "fail"] = "pass" if value < broadcast_target.value else "fail"
    reason = f"warm p95 {value:.1f} ms, cold p95 {cold.get('p95_ms', 'n/a')} ms"
    if received < expected:
        status, reason = "fail", f"{expected - received} of {expected} deliveries missing; {reason}"
    if dropped:
        status = "fail"
        reason = (f"{len(dropped)} of {len(timings)} subscribers disconnected during the window "
                  f"({', '.join(sorted(set(dropped))[:3])}); {reason}")  # fmt: skip
    return check.model_copy(
        update={"status": status, "value": value, "summary": summary, "reason": reason}
    )
