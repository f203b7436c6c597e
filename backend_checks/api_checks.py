"""The API side of ``backend check``: realtime and storage, against a Supabase API.

Three cases, in this order:

- a Supabase project is given (URL, anon key, a test user): :func:`api_preflight` checks
  the stated plan against the load (a load the plan forbids is refused, exit 2) and signs
  the user in (before anything else runs: a wrong URL, key or password is exit 2, an API
  that is down, broken or rate-limiting exit 3; ``backend_checks.supabase_auth``, as for
  ``backend load``); then the checks run against it;
- the embedded default (no DSN): a reference server is started over the managed
  cluster for the length of the checks, with a generated user who is in a conversation;
- a bare PostgreSQL DSN: there is no API to talk to, so the checks are skipped with a
  reason that says how to run them.

This module also holds what both check modules share: the loads and the plans, and (from
``backend_checks.supabase_auth``) the project, its test user's session and sign-in, and
the redaction of the project's secrets. The check modules import it; it imports them
inside the functions that run them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from backend_checks.base_url import check_base_url
from backend_checks.blocking import run_blocking
from backend_checks.supabase_auth import (
    ApiUnreachable,
    Session,
    SignInRefused,
    SupabaseProject,
    answer,
    public_url,
    redact_known,
    redact_secrets,
    sign_in,
)
from devicelab.errors import BackendUnavailable, BadInput, DeviceLabError, UnsafeActionRefused
from devicelab.models import Check

if TYPE_CHECKING:  # aiohttp (~300 ms) and psycopg load in the functions that use them
    import aiohttp

__all__ = [
    "API_CHECKS",
    "MAX_SUBSCRIBERS",
    "PLANS",
    "ApiOptions",
    "ApiUnreachable",
    "PlanLimits",
    "RealtimeLoad",
    "Session",
    "StorageLoad",
    "SupabaseProject",
    "answer",
    "api_options",
    "api_preflight",
    "most_subscribers",
    "preflight",
    "public_url",
    "redact_known",
    "redact_secrets",
    "run_api_checks",
    "sign_in",
    "stall_timeout",
]

#: The check ids this module produces, in report order.
API_CHECKS = (
    ("subscription_setup", "Realtime subscription setup", "realtime"),
    ("realtime_broadcast", "Realtime delivery latency", "realtime"),
    ("storage_upload_5mb", "Upload a 5 MB file", "storage"),
    ("storage_download_5mb", "Download a 5 MB file", "storage"),
    ("signed_url", "Create a signed URL", "storage"),
)
#: The generated users' password (the story's generator uses the same).
TEST_PASSWORD = "password123"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


#: The most subscribers one run opens (and Supabase's largest published connection quota).
MAX_SUBSCRIBERS: Final = 10_000


class RealtimeLoad(_Model):
    """How hard the realtime checks push: subscribers, inserts, rate and cold spells."""

    subscribers: int = Field(default=100, ge=1, le=MAX_SUBSCRIBERS)
    inserts: int = Field(default=30, ge=1, description="warm inserts, at `rate_per_s`")
    rate_per_s: float = Field(default=10.0, gt=0, le=1000)
    cold_inserts: int = Field(default=3, ge=0, description="inserts after `idle_s` quiet")
    idle_s: float = Field(default=2.0, ge=0)
    join_concurrency: int = Field(default=50, ge=1)
    timeout_s: float = Field(default=10.0, gt=0, description="join and delivery timeout")
    answer_timeout_s: float = Field(
        default=30.0, gt=0, description="the longest wait for a byte of an HTTP answer"
    )


def preflight(load: RealtimeLoad, plan: PlanLimits | None) -> None:
    """Refuse a run that would exceed the plan's quotas (exit 2, nothing sent).

    Raises UnsafeActionRefused naming the limit, the planned load and what the plan allows.
    """
    if plan is None:
        return
    if load.subscribers > plan.max_connections:
        raise UnsafeActionRefused(
            f"{load.subscribers} subscribers exceed the {plan.name} plan's "
            f"{plan.max_connections} concurrent Realtime connections ({plan.source})",
            hint=f"use --subscribers {most_subscribers(plan, load.rate_per_s)} or less"
            + _larger_plan(load),
        )
    per_second = load.subscribers * load.rate_per_s
    if per_second > plan.max_messages_per_s:
        most = most_subscribers(plan, load.rate_per_s)
        raise UnsafeActionRefused(
            f"{load.subscribers} subscribers x {load.rate_per_s:g} inserts/s = "
            f"{per_second:g} messages/s exceed the {plan.name} plan's "
            f"{plan.max_messages_per_s:g} messages/s ({plan.source}); the quota would be "
            f"measured as latency. At {load.rate_per_s:g} inserts/s this plan allows at most "
            f"{most} subscribers"
            + ("" if most >= STORY_SUBSCRIBERS else
               f", fewer than the story's {STORY_SUBSCRIBERS}-1000"),
            hint=f"use --subscribers {most}" + _larger_plan(load),
        )  # fmt: skip


#: The story's realtime load: "100-1000 concurrent subscribers".
STORY_SUBSCRIBERS: Final = 100


def most_subscribers(plan: PlanLimits, rate_per_s: float) -> int:
    """The most subscribers ``plan`` allows at ``rate_per_s`` inserts a second (each insert
    is one message per subscriber)."""
    return max(0, min(plan.max_connections, int(plan.max_messages_per_s // rate_per_s)))


def _larger_plan(load: RealtimeLoad) -> str:
    """', or --plan X' naming the smallest published plan that allows ``load``, or what no
    plan allows."""
    for plan in PLANS.values():
        if most_subscribers(plan, load.rate_per_s) >= load.subscribers:
            return f", or --plan {plan.name} if that is your plan"
    return (f"; no published plan allows {load.subscribers} subscribers at "
            f"{load.rate_per_s:g} inserts/s")  # fmt: skip


def stall_timeout(seconds: float, *, total: float | None = None) -> aiohttp.ClientTimeout:
    """The timeout of a session of the API checks: a connect, and each wait for bytes of
    an answer, at most ``seconds`` (an API that stops answering ends the call, not the
    run: aiohttp's default waits 300 s a call); ``total`` bounds a whole call. Websockets
    are not cut: aiohttp lifts the read timeout once a socket is upgraded."""
    import aiohttp

    return aiohttp.ClientTimeout(total=total, sock_connect=seconds, sock_read=seconds)


class StorageLoad(_Model):
    """How many transfers, of what size, into which bucket."""

    size_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    repeats: int = Field(default=5, ge=1, le=100)
    bucket: str = "media"
    signed_urls: int = Field(default=20, ge=1, le=1000)
    expires_in_s: int = Field(default=60, gt=0)
    answer_timeout_s: float = Field(
        default=30.0, gt=0, description="the longest wait for a byte of an HTTP answer"
    )


class ApiOptions(BaseModel):
    """Where and how hard the API checks run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: SupabaseProject | None = Field(
        default=None, description="a Supabase project; None: the reference server"
    )
    plan: str | None = Field(default=None, description="free | pro-spend-cap | pro")
    realtime: RealtimeLoad = Field(default_factory=RealtimeLoad)
    storage: StorageLoad = Field(default_factory=StorageLoad)

    def plan_limits(self) -> PlanLimits | None:
        """The stated plan's quotas, or None when no plan was stated."""
        return PLANS[self.plan] if self.plan else None


def _errored(category: str, exc: DeviceLabError) -> list[Check]:
    # A refusal (a wrong password) is no lost server: its own words and hint then.
    reason = (
        f"cannot measure: the API stopped answering during the run: {exc.message}"
        if isinstance(exc, ApiUnreachable)
        else f"cannot measure: {exc.one_line()}"
    )
    return [
        Check(id=cid, title=title, category=cat, status="error", reason=reason)
        for cid, title, cat in API_CHECKS
        if cat == category
    ]


def _skipped(reason: str) -> list[Check]:
    return [
        Check(id=cid, title=title, category=category, status="skip", reason=reason)
        for cid, title, category in API_CHECKS
    ]


def _test_user(dsn: str) -> str:
    """The email of a generated user who is in at least one conversation.

    Raises BackendUnavailable when there is none or the server fails; BadInput when the
    database has no such tables (the psycopg error translated by db.translate, one line
    without the password)."""
    import psycopg

    from backend_checks.db import connect, translate

    with connect(dsn, autocommit=True) as conn:
        try:
            row = conn.execute(
                """SELECT u.email FROM auth.users u
                   WHERE u.email LIKE 'testuser%%@example.com'
                     AND EXISTS (SELECT 1 FROM public.conversations c
                                 WHERE c.participants @> ARRAY[u.id])
                   ORDER BY u.created_at, u.email LIMIT 1"""
            ).fetchone()
        except psycopg.Error as exc:
            raise translate(exc, dsn, "finding a generated test user") from None
    if row is None:
        raise BackendUnavailable(
            "no generated test user is in a conversation",
            hint="seed data with `devicelab backend datagen --allow-writes`",
        )
    return str(row[0])


def _run(
    project: SupabaseProject, options: ApiOptions, sql_dsn: str | None, *, over: str | None = None
) -> list[Check]:
    """The realtime and storage checks against ``project``; each one's evidence names
    the API it talked to (``api``), and for our reference server the database it served
    (``over``, a DSN): run.backend names the database or the project, not this server."""
    from backend_checks.backend_info import api_url, database_url
    from backend_checks.realtime_checks import realtime_checks
    from backend_checks.storage_checks import storage_checks

    plan = options.plan_limits()
    preflight(options.realtime, plan)
    # Whatever stops one group of checks now (the API gone mid-run, a refused sign-in on
    # the embedded default), the checks already measured stay, and the others are errors
    # with the failure as their reason: the run's results are written, not dropped.
    try:
        checks = realtime_checks(project, options.realtime, plan, sql_dsn=sql_dsn)
    except (BackendUnavailable, SignInRefused) as exc:
        checks = _errored("realtime", exc)
    try:
        checks += storage_checks(project, options.storage)
    except (BackendUnavailable, SignInRefused) as exc:
        checks += _errored("storage", exc)
    api: dict[str, Any] = {"kind": project.kind, "url": api_url(project.url)}
    if project.kind == "reference":
        api["server"] = "devicelab reference server, started by this run"
    if over is not None:
        api["database"] = database_url(over)
    for check in checks:
        check.evidence["api"] = api
    return checks


def api_preflight(options: ApiOptions, *, embedded: bool = True) -> None:
    """What can be known before anything runs: this process may open a socket for each
    subscriber (its soft limit raised if need be; ``embedded``: the realtime checks run on
    the embedded default, its server in this process too), the stated plan allows the
    load, and the project answers and lets the test user sign in.

    Raises EnvironmentProblem (too few open files even at the hard limit), UnsafeActionRefused
    (the plan forbids the load), SignInRefused (exit 2: no Auth at the URL, not a Supabase
    API, the key or the test user refused), BackendUnavailable (exit 3: the API cannot be
    reached, rate-limits sign-ins or answers a server error).
    """
    from devicelab.fdlimit import ensure_open_files

    subscribers = options.realtime.subscribers
    if options.project is not None or embedded:  # else the realtime checks are skipped
        # A socket a subscriber, and the embedded server's end of each in this process.
        ensure_open_files(
            subscribers * (1 if options.project else 2) + 256,
            f"{subscribers:,} Realtime subscribers",
            fewer="fewer --subscribers",
        )
    if options.project is None:
        return
    preflight(options.realtime, options.plan_limits())
    project = options.project

    async def signed_in() -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await sign_in(http, project)

    run_blocking(signed_in())


def run_api_checks(
    managed_dsn: str | None, options: ApiOptions, *, sql_dsn: str | None = None
) -> list[Check]:
    """The realtime and storage checks for this run (see the module docstring).
    ``sql_dsn``: the project's database, if given, where the realtime check deletes the
    test messages the test user may not.

    Raises UnsafeActionRefused when the stated plan forbids the load, BackendUnavailable
    when the embedded default has no test user or its server does not start; an API that
    stops answering during the checks makes those not yet measured errors (their reason
    says so), the measured ones are kept.
    """
    if options.project is not None:
        return _run(options.project, options, sql_dsn)
    if managed_dsn is None:
        return _skipped(
            "needs a Supabase API: give --supabase-url, --anon-key and a test user, "
            "or run without --dsn (the embedded default serves one)"
        )
    from backend_checks.reference.server import ReferenceServer

    email = _test_user(managed_dsn)
    with ReferenceServer(managed_dsn) as server:
        project = SupabaseProject(
            url=server.url, anon_key=server.anon_key, email=email, password=TEST_PASSWORD,
            kind="reference",
        )  # fmt: skip
        return _run(project, options, managed_dsn, over=managed_dsn)


def api_options(
    url: str | None,
    anon_key: str | None,
    email: str | None,
    password: str | None,
    plan: str | None,
    subscribers: int,
) -> ApiOptions:
    """ApiOptions from the command line: all four of url, key, email and password, or none.

    Raises BadInput naming what is missing, a URL that is no API base URL, an unknown plan
    or a subscriber count out of range.
    """
    if plan is not None and plan not in PLANS:
        raise BadInput(f"unknown plan {plan!r}", hint=f"use one of: {', '.join(PLANS)}")
    if not 1 <= subscribers <= MAX_SUBSCRIBERS:
        raise BadInput(
            f"--subscribers {subscribers} is out of range",
            hint=f"use 1 to {MAX_SUBSCRIBERS:,} (the story asks 100 to 1,000)",
        )
    given = {"--supabase-url": url, "--anon-key": anon_key, "--test-email": email,
             "--test-password": password}  # fmt: skip
    missing = [flag for flag, value in given.items() if not value]
    project = None
    if len(missing) < len(given):
        if missing:
            raise BadInput(
                f"a Supabase project needs {', '.join(missing)} too",
                hint="give all four (or SUPABASE_URL, SUPABASE_ANON_KEY, DEVICELAB_TEST_EMAIL, "
                "DEVICELAB_TEST_PASSWORD), or none for the embedded default",
            )
        assert url and anon_key and email and password
        base = check_base_url(url, "--supabase-url")
        project = SupabaseProject(url=base, anon_key=anon_key, email=email, password=password)
    return ApiOptions(project=project, plan=plan, realtime=RealtimeLoad(subscribers=subscribers))
