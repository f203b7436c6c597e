"""Storage checks: ``storage_upload_5mb``, ``storage_download_5mb`` and ``signed_url``.

Against the reference server or a real project alike: the test user uploads a 5 MB file
of random bytes R times to ``<bucket>/<user id>/devicelab-checks/<run>/`` (the folder
layout Supabase's usual storage policies allow), downloads each back (checking the bytes),
and asks for signed URLs (one of them is fetched to prove it works). Every transfer is
timed from request start to the last byte; the objects are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from backend_checks.realtime_checks import Session, SupabaseProject, sign_in
from devicelab.errors import BackendUnavailable
from devicelab.models import Check, summarize
from devicelab.targets import backend_target

__all__ = [
    "StorageLoad",
    "run_storage_checks",
    "storage_checks",
]


class StorageLoad(BaseModel):
    """How many transfers, of what size, into which bucket."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    repeats: int = Field(default=5, ge=1, le=100)
    bucket: str = "media"
    signed_urls: int = Field(default=20, ge=1, le=1000)
    expires_in_s: int = Field(default=60, gt=0)


def _headers(project: SupabaseProject, session: Session, **extra: str) -> dict[str, str]:
    return {"apikey": project.anon_key, "Authorization": f"Bearer {session.access_token}", **extra}


async def _timed(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[float, int, bytes]:
    """(milliseconds to the last byte, status, body) of one request."""
    started = time.perf_counter()
    async with http.request(method, url, **kwargs) as resp:
        body = await resp.read()
    return (time.perf_counter() - started) * 1000, resp.status, body


async def run_storage_checks(project: SupabaseProject, load: StorageLoad) -> list[Check]:
    """Run the three storage checks; returns [upload, download, signed_url].

    Raises BackendUnavailable when the API cannot be reached or the user cannot sign in.
    """
    base = f"{project.url.rstrip('/')}/storage/v1"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        session = await sign_in(http, project)
        folder = f"{session.user_id}/devicelab-checks/{secrets.token_hex(4)}"
        payload = os.urandom(load.size_bytes)
        digest = hashlib.sha256(payload).hexdigest()
        names = [f"{folder}/file-{i}.bin" for i in range(load.repeats)]
        up: list[float] = []
        down: list[float] = []
        sign: list[float] = []
        problems: list[str] = []
        signed_ok: bool | None = None
        try:
            for name in names:
                headers = _headers(project, session, **{"Content-Type": "application/octet-stream",
                                                        "x-upsert": "true"})  # fmt: skip
                ms, status, body = await _timed(http, "POST", f"{base}/object/{load.bucket}/{name}",
                                                data=payload, headers=headers)  # fmt: skip
                if status >= 300:
                    problems.append(f"upload {status}: {body[:200]!r}")
                    break
                up.append(ms)
            for name in names[: len(up)]:
                url = f"{base}/object/authenticated/{load.bucket}/{name}"
                ms, status, body = await _timed(
                    http, "GET", url, headers=_headers(project, session)
                )
                if status != 200 or hashlib.sha256(body).hexdigest() != digest:
                    problems.append(f"download {status}: {len(body)} bytes, not the uploaded file")
                    continue
                down.append(ms)
            if up:
                signed_ok = await _sign(
                    http, base, project, session, load, names[0], sign, problems
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable(f"storage at {base} failed: {exc}") from exc
        finally:
            await _remove(http, base, project, session, load.bucket, names)
    evidence = {"bytes": load.size_bytes, "repeats": load.repeats, "bucket": load.bucket,
                "backend": project.kind, "problems": problems[:5]}  # fmt: skip
    return [
        _check("storage_upload_5mb", "Upload a 5 MB file", up, evidence, load),
        _check("storage_download_5mb", "Download a 5 MB file", down, evidence, load),
        _check(
            "signed_url",
            "Create a signed URL",
            sign,
            {**evidence, "signed_url_fetch_ok": signed_ok},
            load,
        ),
    ]


async def _sign(
    http: aiohttp.ClientSession,
    base: str,
    project: SupabaseProject,
    session: Session,
    load: StorageLoad,
    name: str,
    samples: list[float],
    problems: list[str],
) -> bool:
    """Time ``load.signed_urls`` signings; fetch the last URL. Returns whether it worked."""
    signed = ""
    for _ in range(load.signed_urls):
        ms, status, body = await _timed(
            http, "POST", f"{base}/object/sign/{load.bucket}/{name}",
            json={"expiresIn": load.expires_in_s}, headers=_headers(project, session),
        )  # fmt: skip
        if status != 200:
            problems.append(f"sign {status}: {body[:200]!r}")
            return False
        samples.append(ms)
        signed = str(json.loads(body)["signedURL"])
    url = signed if signed.startswith("http") else f"{base}{signed}"
    async with http.get(url) as resp:
        fetched = await resp.read()
    return resp.status == 200 and len(fetched) == load.size_bytes


async def _remove(
    http: aiohttp.ClientSession,
    base: str,
    project: SupabaseProject,
    session: Session,
    bucket: str,
    names: list[str],
) -> None:
    """Delete the check's objects; a failure here is not the measurement's problem."""
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
    samples: list[float],
    evidence: dict[str, Any],
    load: StorageLoad,
) -> Check:
    target = backend_target(check_id)
    summary = summarize(samples)
    status: Literal["pass", "fail", "error"] = "error"
    reason = "; ".join(evidence.get("problems") or []) or "no sample"
    value = None
    if summary is not None:
        value = summary.p95
        status = "pass" if value < target.value else "fail"
        reason = "" if len(samples) == load.repeats or check_id == "signed_url" else reason
        if evidence.get("signed_url_fetch_ok") is False:
            status, reason = "fail", "the signed URL did not return the file"
    return Check(id=check_id, title=title, category="storage", status=status, value=value,
                 unit="ms", stat="p95", target=target, samples=samples, summary=summary,
                 reason=reason, evidence=evidence)  # fmt: skip


def storage_checks(project: SupabaseProject, load: StorageLoad) -> list[Check]:
    """Blocking form of :func:`run_storage_checks` (same returns and raises)."""
    return asyncio.run(run_storage_checks(project, load))
