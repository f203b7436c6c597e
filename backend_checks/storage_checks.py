"""Storage checks: ``storage_upload_5mb``, ``storage_download_5mb`` and ``signed_url``.

Against the reference server or a real project alike: the test user uploads a 5 MB file
of random bytes R times to ``<bucket>/<user id>/devicelab-checks/<run>/`` (the folder
layout Supabase's usual storage policies allow), downloads each back (checking the bytes),
and asks for signed URLs (one of them is fetched to prove it works). Every transfer is
timed from request start to the last byte; the objects are deleted afterwards, also when
the run stops early. Every request is made even after one fails: a check with any failed
request fails, saying how many of how many and why; it is an error only when none
succeeded (nothing was measured).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from backend_checks.api_checks import (
    ApiUnreachable,
    Session,
    StorageLoad,
    SupabaseProject,
    public_url,
    redact_secrets,
    sign_in,
    stall_timeout,
)
from backend_checks.blocking import run_blocking
from backend_checks.reasons import judged_reason
from devicelab.models import Check, summarize
from devicelab.targets import backend_target

if TYPE_CHECKING:  # aiohttp (~300 ms) loads in the functions that use it
    import aiohttp

__all__ = [
    "StorageLoad",
    "run_storage_checks",
    "storage_checks",
]


def _headers(project: SupabaseProject, session: Session, **extra: str) -> dict[str, str]:
    return {"apikey": project.anon_key, "Authorization": f"Bearer {session.access_token}", **extra}


class _Outcome:
    """One kind of request (uploads, downloads, signings): the timed successes and the
    failures, each failure's text redacted."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.samples: list[float] = []
        self.failures: list[str] = []

    @property
    def tried(self) -> int:
        return len(self.samples) + len(self.failures)

    def failed_reason(self) -> str:
        """'2 of 5 uploads failed (HTTP 500: boom; ...)', or '' when none failed."""
        if not self.failures:
            return ""
        seen = list(dict.fromkeys(self.failures))[:3]
        return f"{len(self.failures)} of {self.tried} {self.what} failed ({'; '.join(seen)})"


#: The piece of an upload written at a time: each one written proves the API still reads.
_CHUNK = 256 * 1024


async def _timed(
    http: aiohttp.ClientSession,
    outcome: _Outcome,
    project: SupabaseProject,
    method: str,
    url: str,
    *,
    stall_s: float,
    data: bytes | None = None,
    **kwargs: Any,
) -> bytes | None:
    """Time one request to the last byte into ``outcome``; returns the body, or None when
    it failed (HTTP status >= 300, a connection error: recorded as a failure).

    Raises ApiUnreachable when the API stalls: ``data`` not read on for ``stall_s``
    seconds, or no byte of the answer for as long (the session's read timeout). The
    other requests would wait as long each: the caller's checks become errors."""
    import aiohttp

    started = time.perf_counter()
    guard: asyncio.Timeout | None = None
    try:
        async with asyncio.timeout(None) as guard:
            if data is not None:
                kwargs["data"] = _guarded(data, guard, stall_s)
                kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Length": str(len(data))}
                # No socket read timeout while the body goes out: aiohttp starts it when
                # the request is sent and resets it only on bytes of the answer, so a slow
                # upload that still progresses was cut after stall_s. Progress is the
                # guard's (each piece taken); a whole upload keeps the session's total.
                kwargs["timeout"] = aiohttp.ClientTimeout(
                    total=http.timeout.total, sock_connect=stall_s, sock_read=None
                )
            async with http.request(method, url, **kwargs) as resp:
                body = await resp.read()
    except TimeoutError as exc:
        if guard is not None and guard.expired():
            said = f"no progress in {stall_s:g} s"
        elif str(exc):
            said = f"{type(exc).__name__}: {exc}"
        else:  # the session's total: progressing, but too slow for it
            said = f"no whole answer within {http.timeout.total:g} s"
        outcome.failures.append(redact_secrets(said, project))
        raise ApiUnreachable(
            f"{method} {public_url(url)}: {redact_secrets(said, project)}",
            hint="check that the API and the network still work",
        ) from None
    except aiohttp.ClientError as exc:
        outcome.failures.append(redact_secrets(f"{type(exc).__name__}: {exc}", project))
        return None
    ms = (time.perf_counter() - started) * 1000
    if resp.status >= 300:
        said = body[:200].decode("utf-8", "replace")
        outcome.failures.append(redact_secrets(f"HTTP {resp.status}: {said}", project))
        return None
    outcome.samples.append(ms)
    return body


async def _guarded(data: bytes, guard: asyncio.Timeout, stall_s: float) -> AsyncIterator[bytes]:
    """``data`` in pieces, the ``guard``'s deadline moved ``stall_s`` on with each piece
    the API took (a body it stops reading would otherwise wait for the total timeout),
    and lifted once all is sent: the wait for the answer is the read timeout's."""
    loop = asyncio.get_running_loop()
    for at in range(0, len(data), _CHUNK):
        guard.reschedule(loop.time() + stall_s)
        yield data[at : at + _CHUNK]
    guard.reschedule(None)


async def run_storage_checks(project: SupabaseProject, load: StorageLoad) -> list[Check]:
    """Run the three storage checks; returns [upload, download, signed_url]. Every
    request is made; any failed one fails its check (an error when none succeeded).

    Raises BackendUnavailable when the API cannot be reached or the user cannot sign in;
    ApiUnreachable (one) also when it stops answering: a request with no progress for
    ``load.answer_timeout_s`` (each other one would wait as long).
    """
    import aiohttp

    base = f"{project.url.rstrip('/')}/storage/v1"
    up, down, sign = _Outcome("uploads"), _Outcome("downloads"), _Outcome("signed URLs")
    signed_ok: str | None = None
    timeout = stall_timeout(load.answer_timeout_s, total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        session = await sign_in(http, project)
        folder = f"{session.user_id}/devicelab-checks/{secrets.token_hex(4)}"
        payload = os.urandom(load.size_bytes)
        digest = hashlib.sha256(payload).hexdigest()
        names = [f"{folder}/file-{i}.bin" for i in range(load.repeats)]
        uploaded: list[str] = []
        try:
            for name in names:
                headers = _headers(project, session, **{"Content-Type": "application/octet-stream",
                                                        "x-upsert": "true"})  # fmt: skip
                url = f"{base}/object/{load.bucket}/{name}"
                sent = await _timed(http, up, project, "POST", url, data=payload, headers=headers,
                                    stall_s=load.answer_timeout_s)  # fmt: skip
                if sent is not None:  # an empty 200 body is still an upload
                    uploaded.append(name)
            for name in uploaded:
                url = f"{base}/object/authenticated/{load.bucket}/{name}"
                body = await _timed(http, down, project, "GET", url,
                                    headers=_headers(project, session),
                                    stall_s=load.answer_timeout_s)  # fmt: skip
                if body is not None and hashlib.sha256(body).hexdigest() != digest:
                    down.samples.pop()  # timed, but not the file: a failure, not a sample
                    down.failures.append(f"{len(body)} bytes that are not the uploaded file")
            if uploaded:
                signed_ok = await _sign(http, base, project, session, load, uploaded[0], sign)
        finally:
            await _remove(http, base, project, session, load.bucket, names)
    evidence = {"bytes": load.size_bytes, "repeats": load.repeats, "bucket": load.bucket,
                "backend": project.kind}  # fmt: skip
    not_uploaded = "" if uploaded else "nothing was uploaded to download"
    return [
        _check("storage_upload_5mb", "Upload a 5 MB file", up, evidence),
        _check("storage_download_5mb", "Download a 5 MB file", down, evidence, not_uploaded),
        _check("signed_url", "Create a signed URL", sign,
               {**evidence, "signed_url_fetch": signed_ok or "not tried"},
               not_uploaded or ("" if signed_ok in (None, "ok") else
                                f"the signed URL did not return the file ({signed_ok})")),
    ]  # fmt: skip


async def _sign(
    http: aiohttp.ClientSession,
    base: str,
    project: SupabaseProject,
    session: Session,
    load: StorageLoad,
    name: str,
    outcome: _Outcome,
) -> str | None:
    """Time ``load.signed_urls`` signings into ``outcome``; fetch the last URL made.
    Returns "ok", what went wrong with the fetch, or None when no URL was made."""
    signed = ""
    for _ in range(load.signed_urls):
        body = await _timed(
            http, outcome, project, "POST", f"{base}/object/sign/{load.bucket}/{name}",
            json={"expiresIn": load.expires_in_s}, headers=_headers(project, session),
            stall_s=load.answer_timeout_s,
        )  # fmt: skip
        try:
            signed = str(json.loads(body)["signedURL"]) if body is not None else signed
        except (ValueError, KeyError, TypeError):
            outcome.samples.pop()
            outcome.failures.append("answer without a signedURL")
    if not signed:
        return None
    url = signed if signed.startswith("http") else f"{base}{signed}"
    fetched = _Outcome("fetches")
    got = await _timed(http, fetched, project, "GET", url, stall_s=load.answer_timeout_s)
    if got is None:
        return fetched.failures[0]
    return "ok" if len(got) == load.size_bytes else f"{len(got)} bytes, not the file"


async def _remove(
    http: aiohttp.ClientSession,
    base: str,
    project: SupabaseProject,
    session: Session,
    bucket: str,
    names: list[str],
) -> None:
    """Delete the check's objects; a failure here is not the measurement's problem."""
    import aiohttp

    try:
        async with http.delete(
            f"{base}/object/{bucket}", json={"prefixes": names}, headers=_headers(project, session)
        ) as resp:
            await resp.read()
    except (aiohttp.ClientError, TimeoutError):
        pass


def _check(
    check_id: str,
    title: str,
    outcome: _Outcome,
    evidence: dict[str, Any],
    unmeasured: str = "",
) -> Check:
    """The check of one kind of request: its p95 against the target; failed when any
    request failed or ``unmeasured`` says why it could not be checked at all; an error
    when nothing could be measured."""
    target = backend_target(check_id)
    summary = summarize(outcome.samples)
    reason = "; ".join(r for r in (outcome.failed_reason(), unmeasured) if r)
    evidence = {**evidence, "requests": outcome.tried, "failed": len(outcome.failures),
                "failures": outcome.failures[:5]}  # fmt: skip
    status: Literal["pass", "fail", "error"] = "error"
    value = None
    if summary is not None:
        value = summary.p95
        status = "pass" if value < target.value and not reason else "fail"
        said = judged_reason("p95 {value}", value, "ms", target)
        reason = f"{reason}; {said}" if reason else said
    elif not reason:
        reason = "no request was made"
    return Check(id=check_id, title=title, category="storage", status=status, value=value,
                 unit="ms", stat="p95", target=target, samples=outcome.samples, summary=summary,
                 reason=reason, evidence=evidence)  # fmt: skip


def storage_checks(project: SupabaseProject, load: StorageLoad) -> list[Check]:
    """Blocking form of :func:`run_storage_checks` (same returns and raises)."""
    return run_blocking(run_storage_checks(project, load))
