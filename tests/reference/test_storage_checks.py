"""The storage checks against the reference server: sane Check objects, files cleaned up."""

from __future__ import annotations

from typing import Any

import psycopg

from backend_checks.realtime_checks import SupabaseProject
from backend_checks.reference.server import ReferenceServer
from backend_checks.storage_checks import StorageLoad, storage_checks


def test_storage_checks_time_real_transfers(
    server: ReferenceServer, db: psycopg.Connection[Any]
) -> None:
    project = SupabaseProject(url=server.url, anon_key=server.anon_key, kind="reference",
                              email="testuser2@example.com", password="password123")  # fmt: skip
    upload, download, signed = storage_checks(project, StorageLoad(repeats=2, signed_urls=5))

    assert [c.id for c in (upload, download, signed)] == [
        "storage_upload_5mb", "storage_download_5mb", "signed_url"]  # fmt: skip
    for check in (upload, download):  # verdicts follow values; values follow the load
        assert check.status in ("pass", "fail") and check.value is not None, check.reason
        assert (check.status == "pass") == (check.value < 2000)
        assert len(check.samples) == 2 and check.evidence["bytes"] == 5 * 1024 * 1024
    assert signed.status in ("pass", "fail") and len(signed.samples) == 5
    assert signed.evidence["signed_url_fetch"] == "ok"
    assert signed.target is not None and signed.target.value == 100
    left = db.execute(
        "SELECT count(*) FROM storage.objects WHERE name LIKE %s", ("%devicelab-checks%",)
    ).fetchone()
    assert left == (0,)
