"""The API side of ``backend check``: realtime and storage, against a Supabase API.

Three cases, in this order:

- a Supabase project is given (URL, anon key, a test user): the checks run against it,
  after the plan preflight (a load the stated plan forbids is refused, exit 2);
- the embedded default (no DSN): a reference server is started over the managed
  cluster for the length of the checks, with a generated user who is in a conversation;
- a bare PostgreSQL DSN: there is no API to talk to, so the checks are skipped with a
  reason that says how to run them.
"""

from __future__ import annotations

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from backend_checks.realtime_checks import (
    PLANS,
    PlanLimits,
    RealtimeLoad,
    SupabaseProject,
    preflight,
    realtime_checks,
)
from backend_checks.storage_checks import StorageLoad, storage_checks
from devicelab.errors import BackendUnavailable, BadInput
from devicelab.models import Check

__all__ = ["API_CHECKS", "ApiOptions", "api_options", "run_api_checks"]

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


def _skipped(reason: str) -> list[Check]:
    return [
        Check(id=cid, title=title, category=category, status="skip", reason=reason)
        for cid, title, category in API_CHECKS
    ]


def _test_user(dsn: str) -> str:
    """The email of a generated user who is in at least one conversation."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            """SELECT u.email FROM auth.users u
               WHERE u.email LIKE 'testuser%%@example.com'
                 AND EXISTS (SELECT 1 FROM public.conversations c
                             WHERE c.participants @> ARRAY[u.id])
               ORDER BY u.created_at, u.email LIMIT 1"""
        ).fetchone()
    if row is None:
        raise BackendUnavailable(
            "no generated test user is in a conversation",
            hint="seed data with `devicelab backend datagen --allow-writes`",
        )
    return str(row[0])


def _run(project: SupabaseProject, options: ApiOptions) -> list[Check]:
    plan = options.plan_limits()
    preflight(options.realtime, plan)
    checks = realtime_checks(project, options.realtime, plan)
    checks += storage_checks(project, options.storage)
    return checks


def run_api_checks(managed_dsn: str | None, options: ApiOptions) -> list[Check]:
    """The realtime and storage checks for this run (see the module docstring).

    Raises UnsafeActionRefused when the stated plan forbids the load, BackendUnavailable
    when the API cannot be reached or the test user cannot sign in.
    """
    if options.project is not None:
        return _run(options.project, options)
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
        return _run(project, options)


def api_options(
    url: str | None,
    anon_key: str | None,
    email: str | None,
    password: str | None,
    plan: str | None,
    subscribers: int,
) -> ApiOptions:
    """ApiOptions from the command line: all four of url, key, email and password, or none.

    Raises BadInput naming what is missing, or an unknown plan.
    """
    if plan is not None and plan not in PLANS:
        raise BadInput(f"unknown plan {plan!r}", hint=f"use one of: {', '.join(PLANS)}")
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
        project = SupabaseProject(url=url, anon_key=anon_key, email=email, password=password)
    return ApiOptions(project=project, plan=plan, realtime=RealtimeLoad(subscribers=subscribers))
