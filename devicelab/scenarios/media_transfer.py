"""The story's "Storage Upload/Download Performance (Mobile)": a 1 MB image and a 10 MB
video, up and down through Supabase Storage from the app.

The bytes are random (nothing on the way can compress them); each download fetches a
distinct object, so no cache answers.
"""

from __future__ import annotations

from devicelab.harness import ProbeResult, ProbeTimedOut
from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, judged
from devicelab.targets import resolve

__all__ = ["CATEGORY", "TITLES", "image_download", "image_upload", "video_download",
           "video_upload"]  # fmt: skip

CATEGORY = "storage"
MB = 1 << 20
TITLES = {
    "image_upload_1mb": "Image upload (1 MB) from the app",
    "image_download_1mb": "Image download (1 MB) in the app",
    "video_upload_10mb": "Video upload (10 MB) from the app",
    "video_download_10mb": "Video download (10 MB) in the app",
}


def _transfer(
    ctx: ScenarioContext, check_id: str, probe: str, size: int, content_type: str, count: int
) -> Check:
    try:
        result = ctx.harness.run(
            probe,
            {"bytes": size, "count": count, "contentType": content_type},
            timeout_s=ctx.options.probe_timeout_s,
        )
    except ProbeTimedOut as exc:
        too_slow = _too_slow(ctx, check_id, count, exc.timeout_s)
        if too_slow is None:
            raise
        return too_slow
    return judged(ctx, check_id, TITLES[check_id], CATEGORY, result)


def _too_slow(ctx: ScenarioContext, check_id: str, count: int, timeout_s: float) -> Check | None:
    """The verdict when ``count`` transfers did not finish within ``timeout_s``: at least one
    of them took ``timeout_s / count`` or more. When that alone misses an upper-bound target
    (a 10 MB upload at slow-3g takes 200 s against < 30 s), the check fails with that lower
    bound as its value; None when the timeout says nothing certain about the target."""
    target = resolve(ctx.book, check_id, ctx.platform, ctx.column)
    at_least_ms = timeout_s * 1000 / count
    if target is None or target.value is None or target.op not in ("<", "<="):
        return None
    reason = (
        f"not done within {timeout_s:g} s ({count} transfer(s)): one took >= "
        f"{at_least_ms / 1000:g} s, missing {target.label()} (a transfer may still be "
        "running in the app)"
    )
    probe_result = ProbeResult(samples=[], unit="ms")
    evidence = {"timed_out_s": timeout_s, "count": count, "censored": True}
    check = judged(
        ctx, check_id, TITLES[check_id], CATEGORY, probe_result,
        value=at_least_ms, evidence=evidence, reason=reason,
    )  # fmt: skip
    return check if check.status == "fail" else None  # a lower bound that meets it: unsure


def image_upload(ctx: ScenarioContext) -> Check:
    """Upload ``image_count`` 1 MB images; returns the judged check (p95)."""
    return _transfer(ctx, "image_upload_1mb", "storage_upload", MB, "image/jpeg",
                     ctx.options.image_count)  # fmt: skip


def image_download(ctx: ScenarioContext) -> Check:
    """Download ``image_count`` 1 MB images; returns the judged check (p95)."""
    return _transfer(ctx, "image_download_1mb", "storage_download", MB, "image/jpeg",
                     ctx.options.image_count)  # fmt: skip


def video_upload(ctx: ScenarioContext) -> Check:
    """Upload ``video_count`` 10 MB videos; returns the judged check (p95)."""
    return _transfer(ctx, "video_upload_10mb", "storage_upload", 10 * MB, "video/mp4",
                     ctx.options.video_count)  # fmt: skip


def video_download(ctx: ScenarioContext) -> Check:
    """Download ``video_count`` 10 MB videos; returns the judged check (p95)."""
    return _transfer(ctx, "video_download_10mb", "storage_download", 10 * MB, "video/mp4",
                     ctx.options.video_count)  # fmt: skip
