"""The story's "Storage Upload/Download Performance (Mobile)": a 1 MB image and a 10 MB
video, up and down through Supabase Storage from the app.

The bytes are random (nothing on the way can compress them); each download fetches a
distinct object, so no cache answers.
"""

from __future__ import annotations

from devicelab.models import Check
from devicelab.scenarios.context import ScenarioContext, judged

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
    result = ctx.harness.run(
        probe,
        {"bytes": size, "count": count, "contentType": content_type},
        timeout_s=ctx.options.probe_timeout_s,
    )
    return judged(ctx, check_id, TITLES[check_id], CATEGORY, result)


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
