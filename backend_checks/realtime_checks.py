"""Realtime checks: ``subscription_setup`` and ``realtime_broadcast``, on any Supabase API.

They run the same against the reference server and a real project (URL, anon key, a test
user). N subscribers (websockets of this process, signed in as the test user, so RLS
applies) join one postgres_changes binding on ``messages`` of one of the user's
conversations; then the user inserts M messages through REST. Every delivery's latency is
``arrival - insert start`` on one clock (``time.perf_counter`` of this process); the first
inserts after a quiet spell (``cold``: hosted Realtime polls its slot every 100 ms and
backs off to 500 ms when idle) are kept apart from the steady stream (``warm``). The test
messages are deleted at the end, also when the run stops early.

Before any socket opens, :func:`preflight` (in ``api_checks``) compares the run with the
plan limits the user states and refuses a run that would exceed them, so a quota is never
reported as slowness. A join that never completes or a change never delivered by a server
that answers fails the check; only a server we cannot connect or authenticate to makes it
an error.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Final, Literal

from backend_checks.api_checks import (
    PLANS,
    PlanLimits,
    RealtimeLoad,
    Session,
    SupabaseProject,
    answer,
    preflight,
    redact_secrets,
    sign_in,
    stall_timeout,
)
from backend_checks.blocking import run_blocking
from backend_checks.reasons import judged_reason
from devicelab.errors import BackendUnavailable
from devicelab.models import Check, percentile, summarize
from devicelab.numbers import fmt_value
from devicelab.targets import backend_target

if TYPE_CHECKING:  # aiohttp (~300 ms; the websocket client too) loads where it is used
    import aiohttp

    from backend_checks.reference.realtime_client import JoinTiming, Subscriber

# The plan and project names are re-exported: callers have imported them from here.
__all__ = [
    "MAX_SAMPLES",
    "PLANS",
    "PlanLimits",
    "RealtimeLoad",
    "SupabaseProject",
    "preflight",
    "realtime_checks",
    "run_realtime_checks",
]


def _stats(values: list[float]) -> dict[str, float | int]:
    """count, p50/p95/p99, min, max and mean (ms) of latencies, as the evidence shows them."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        **{f"p{p}_ms": percentile(values, p) for p in (50, 95, 99)},
        "min_ms": min(values),
        "max_ms": max(values),
        "mean_ms": sum(values) / len(values),
    }


#: Up to this many warm deliveries are the samples themselves; beyond it, the 1,001
#: quantiles 0%, 0.1%, ..., 100% of them (whose p50 and p95 are the deliveries' own), so
#: results.json stays small at 1,000 subscribers x 30 inserts.
MAX_SAMPLES: Final = 5000


class _Deliveries:
    """Insert start times and delivery latencies (ms), cold and warm."""

    def __init__(self, run_id: str) -> None:
        self.marker = f"dlrt-{run_id}-"
        self.started: dict[int, tuple[float, bool]] = {}
        self.inserted: set[int] = set()  # the inserts the API confirmed
        self.received: dict[int, int] = defaultdict(int)
        self.latency_ms: dict[str, list[float]] = {"cold": [], "warm": []}

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
        self.latency_ms["cold" if sent[1] else "warm"].append((arrived - sent[0]) * 1000)
        self.received[seq] += 1

    def samples(self) -> list[float]:
        """The warm deliveries' latencies, or their 1,001 quantiles (MAX_SAMPLES)."""
        warm = self.latency_ms["warm"]
        if len(warm) <= MAX_SAMPLES:
            return list(warm)
        ordered = sorted(warm)
        return [percentile(ordered, i / 10) for i in range(1001)]


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
            said = (await resp.text(errors="replace"))[:200]
            raise BackendUnavailable(
                f"insert refused ({resp.status}): {said}",
                hint="the test user must be able to send messages in its conversation: the "
                "reference schema's tables and policies must be on the project",
            )


#: Join failures that say the server cannot be reached or would not authenticate us:
#: infrastructure (the check is an error), where any other is the server not doing what the
#: check measures (a failed check).
_AUTH_WORDS = re.compile(r"jwt|token|unauthori[sz]ed|forbidden|auth", re.I)


async def _open_subscribers(
    http: aiohttp.ClientSession,
    project: SupabaseProject,
    session: Session,
    load: RealtimeLoad,
    deliveries: _Deliveries,
    subs: list[Subscriber],
) -> tuple[list[Subscriber], list[JoinTiming], list[tuple[bool, str]]]:
    """Connect and join ``load.subscribers`` subscribers (each connected one is appended to
    ``subs``, for the caller to close). Returns (those that joined, their join timings, the
    failures as (infrastructure?, redacted reason))."""
    import aiohttp

    from backend_checks.reference.realtime_client import RealtimeRefused, Subscriber, websocket_url

    url = websocket_url(project.url, project.anon_key)
    binding = {"event": "INSERT", "schema": "public", "table": "messages",
               "filter": f"conversation_id=eq.{session.conversation_id}"}  # fmt: skip
    gate = asyncio.Semaphore(load.join_concurrency)
    joined: list[Subscriber] = []
    timings: list[JoinTiming] = []
    errors: list[tuple[bool, str]] = []

    def failed(infrastructure: bool, text: str) -> None:
        errors.append((infrastructure, redact_secrets(text, project, session.access_token)))

    async def one(i: int) -> None:
        async with gate:
            try:
                sub = await Subscriber.connect(http, url, on_change=deliveries.on_change)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failed(True, f"cannot open the Realtime websocket: {type(exc).__name__}: {exc}")
                return
            subs.append(sub)
            try:
                timing = await sub.join(f"dl-check-{i}", postgres_changes=[binding],
                                        access_token=session.access_token,
                                        timeout=load.timeout_s)  # fmt: skip
            except RealtimeRefused as exc:
                failed(bool(_AUTH_WORDS.search(str(exc))), f"join refused: {exc}")
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                failed(False, str(exc) or type(exc).__name__)
                return
            timings.append(timing)
            joined.append(sub)
            sub.start()

    await asyncio.gather(*(one(i) for i in range(load.subscribers)))
    return joined, timings, errors


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
        deliveries.inserted.add(seq)

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


def _closed(sub: Any) -> str:
    """How a subscriber's socket closed: the server's close code and reason, if it sent
    one (1001 "server stopping"), for the disconnects of the evidence."""
    code = sub.ws.close_code
    return f"socket closed ({code})" if code is not None else "socket closed"


async def _delete_inserted(
    http: aiohttp.ClientSession,
    project: SupabaseProject,
    session: Session,
    deliveries: _Deliveries,
    sql_dsn: str | None,
) -> dict[str, Any]:
    """Delete the test messages this run inserted: through REST as the test user, then,
    for what RLS kept, through ``sql_dsn`` when there is one. Returns the evidence
    (inserted, deleted, left, and why some were left); never raises."""
    import aiohttp

    # Confirmed inserts only: 32 sent with the API gone after 7 said 32 inserted and left.
    # One cut off in flight may have landed or not: "unconfirmed", and deleted if it did.
    sent = len(deliveries.inserted)
    found: dict[str, Any] = {"inserted": sent, "deleted": 0, "left": sent}
    unconfirmed = len(deliveries.started) - sent
    if unconfirmed:
        found["unconfirmed"] = unconfirmed
    if not (sent or unconfirmed):
        return found
    where = (f"conversation_id=eq.{session.conversation_id}&sender_id=eq.{session.user_id}"
             f"&content=like.{deliveries.marker}*")  # fmt: skip
    headers = {"apikey": project.anon_key, "Authorization": f"Bearer {session.access_token}",
               "Prefer": "return=representation"}  # fmt: skip
    refused = ""
    try:
        async with asyncio.timeout(10):
            url = f"{project.url.rstrip('/')}/rest/v1/messages?select=id&{where}"
            async with http.delete(url, headers=headers) as resp:
                status, rows = await answer(resp)
        if status < 300 and isinstance(rows, list):
            found["deleted"] = len(rows)
        else:
            refused = f"REST delete answered {status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        refused = f"REST delete failed: {type(exc).__name__}"
    if found["deleted"] < sent and not refused:
        refused = "REST deleted fewer than were inserted (RLS allows the test user no DELETE)"
    if (found["deleted"] < sent or refused) and sql_dsn:
        found["deleted"] += _delete_by_sql(sql_dsn, session, deliveries.marker)
    found["left"] = max(0, sent - found["deleted"])
    if found["left"] or (unconfirmed and refused and not sql_dsn):
        found["left_why"] = redact_secrets(refused, project, session.access_token)
        found["left_where"] = (f"public.messages of conversation {session.conversation_id}, "
                               f"content starting {deliveries.marker!r}")  # fmt: skip
    return found


def _delete_by_sql(dsn: str, session: Session, marker: str) -> int:
    """Rows deleted through the database (the owner is not subject to RLS); 0 on any error."""
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            done = conn.execute(
                "DELETE FROM public.messages WHERE conversation_id = %s AND sender_id = %s"
                " AND content LIKE %s",
                (session.conversation_id, session.user_id, marker + "%"),
            )
            return max(0, done.rowcount)
    except psycopg.Error:
        return 0


async def run_realtime_checks(
    project: SupabaseProject,
    load: RealtimeLoad,
    plan: PlanLimits | None = None,
    *,
    sql_dsn: str | None = None,
) -> list[Check]:
    """Run both realtime checks; returns [subscription_setup, realtime_broadcast]. The test
    messages are deleted at the end, also when stopped (``sql_dsn``: the project's database,
    used for what RLS does not let the test user delete).

    Raises UnsafeActionRefused (before connecting) when the plan forbids the load, and
    BackendUnavailable when the API cannot be reached or the test user cannot sign in.
    """
    import aiohttp

    preflight(load, plan)
    deliveries = _Deliveries(secrets.token_hex(4))
    connector = aiohttp.TCPConnector(limit=0)
    subs: list[Subscriber] = []
    insert_error = ""
    timeout = stall_timeout(load.answer_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        session = await sign_in(http, project)
        try:
            joined, timings, errors = await _open_subscribers(
                http, project, session, load, deliveries, subs
            )
            if timings:
                try:
                    await _drive_inserts(http, project, session, load, deliveries, len(timings))
                except (BackendUnavailable, aiohttp.ClientError, TimeoutError) as exc:
                    insert_error = redact_secrets(str(exc) or type(exc).__name__, project,
                                                  session.access_token)  # fmt: skip
            # The story's "connection stability (no disconnects)": a subscriber whose socket
            # closed, or whose channel the server closed or errored, before we closed it.
            dropped = [sub.closed_reason or _closed(sub) for sub in joined
                       if sub.ws.closed or sub.closed_reason]  # fmt: skip
        finally:
            await asyncio.gather(*(sub.close() for sub in subs))
            cleanup = await _delete_inserted(http, project, session, deliveries, sql_dsn)
    evidence = {"subscribers": load.subscribers, "joined": len(timings), "plan": plan and plan.name,
                "backend": project.kind, "join_errors": [text for _, text in errors][:5],
                "test_messages": cleanup}  # fmt: skip
    setup = _setup_check(timings, errors, evidence)
    return [setup, _broadcast_check(deliveries, load, timings, evidence, dropped, setup,
                                    insert_error)]  # fmt: skip


def realtime_checks(
    project: SupabaseProject,
    load: RealtimeLoad,
    plan: PlanLimits | None = None,
    *,
    sql_dsn: str | None = None,
) -> list[Check]:
    """Blocking form of :func:`run_realtime_checks` (same returns and raises)."""
    return run_blocking(run_realtime_checks(project, load, plan, sql_dsn=sql_dsn))


def _setup_check(
    timings: list[JoinTiming], errors: list[tuple[bool, str]], evidence: dict[str, Any]
) -> Check:
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
    # Most common first: one line tells what happened to the many.
    counts: dict[str, int] = defaultdict(int)
    for _, text in errors:
        counts[text] += 1
    told = "; ".join(f"{n} x {text}" for text, n in sorted(counts.items(), key=lambda c: -c[1]))
    failed = f"{len(errors)} of {evidence['subscribers']} joins failed: {told}"
    if summary is None:
        # Nothing came up: the server could not be reached or would not take our token
        # (an error), or it answered but never subscribed (the check fails).
        infrastructure = all(infra for infra, _ in errors)
        return check.model_copy(
            update={
                "status": "error" if infrastructure else "fail",
                "reason": "no subscription came up; " + failed,
            }
        )
    status = "pass" if summary.p95 < setup_target.value and not errors else "fail"
    said = judged_reason("p95 {value}", summary.p95, "ms", setup_target)
    return check.model_copy(
        update={"status": status, "value": summary.p95,
                "reason": f"{failed}; {said}" if errors else said}
    )  # fmt: skip


def _broadcast_check(
    deliveries: _Deliveries,
    load: RealtimeLoad,
    timings: list[JoinTiming],
    evidence: dict[str, Any],
    dropped: list[str],
    setup: Check,
    insert_error: str,
) -> Check:
    broadcast_target = backend_target("realtime_broadcast")
    expected = len(timings) * (load.inserts + load.cold_inserts)
    received = sum(deliveries.received.values())
    samples = deliveries.samples()
    summary = summarize(samples)
    left = evidence["test_messages"]["left"]
    check = Check(
        id="realtime_broadcast",
        title=f"Realtime delivery latency, {len(timings)} subscribers (insert -> change)",
        category="realtime",
        status="fail",
        unit="ms",
        stat="p95",
        target=broadcast_target,
        samples=samples,
        summary=summary,
        evidence={
            **evidence,
            "warm": _stats(deliveries.latency_ms["warm"]),
            "cold": _stats(deliveries.latency_ms["cold"]),
            "inserts": load.inserts,
            "cold_inserts": load.cold_inserts,
            "rate_per_s": load.rate_per_s,
            "messages_per_s": len(timings) * load.rate_per_s,
            "deliveries_expected": expected,
            "deliveries_received": received,
            "samples_are": "warm deliveries' latencies (insert start -> change arrived)"
            + (", as their 1,001 quantiles" if len(samples) == 1001 and received > MAX_SAMPLES
               else ""),
            "disconnects": len(dropped),
            "disconnect_reasons": sorted(set(dropped))[:5],
        },
    )  # fmt: skip
    kept = (
        f"; {fmt_value(left, 'test messages')} left in the database (see evidence)" if left else ""
    )
    if not timings:
        return check.model_copy(
            update={
                "status": setup.status,
                "reason": "no subscriber joined, nothing to measure (see subscription_setup)",
            }
        )
    if insert_error:
        return check.model_copy(
            update={"status": "error", "reason": f"cannot measure: {insert_error}{kept}"}
        )
    if summary is None:
        reason = (
            f"no change was delivered: 0 of {expected} deliveries within "
            f"{load.timeout_s:g} s of the inserts{kept}"
        )
        return check.model_copy(update={"reason": reason})
    value = summary.p95
    status: Literal["pass", "fail"] = "pass" if value < broadcast_target.value else "fail"
    cold = check.evidence["cold"]
    cold_p95 = f"{cold['p95_ms']:.1f} ms" if cold["count"] else "n/a"
    reason = judged_reason("warm p95 {value}", value, "ms", broadcast_target)
    reason += f" (cold p95 {cold_p95})"
    if received < expected:
        status, reason = "fail", f"{expected - received} of {expected} deliveries missing; {reason}"
    if dropped:
        status = "fail"
        reason = (f"{len(dropped)} of {len(timings)} subscribers disconnected during the window "
                  f"({', '.join(sorted(set(dropped))[:3])}); {reason}")  # fmt: skip
    return check.model_copy(update={"status": status, "value": value, "reason": reason + kept})
