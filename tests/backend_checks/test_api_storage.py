"""The storage checks' verdicts when some requests fail (a small fake Storage API)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from backend_checks.api_checks import StorageLoad, SupabaseProject
from backend_checks.storage_checks import run_storage_checks

ANON = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.ANONKEYSECRETSIGNATURE"
LOAD = StorageLoad(size_bytes=1024, repeats=5, signed_urls=3)


def fake_storage(upload_ok: int) -> web.Application:
    """Auth, one conversation, and a bucket whose uploads fail (500) after ``upload_ok``."""
    files: dict[str, bytes] = {}

    async def token(_: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "user": {"id": "u1"}})

    async def conversations(_: web.Request) -> web.Response:
        return web.json_response([{"id": "c1"}])

    async def upload(request: web.Request) -> web.Response:
        if len(files) >= upload_ok:
            return web.json_response({"statusCode": "500", "message": "boom"}, status=500)
        files[request.match_info["name"]] = await request.read()
        return web.json_response({"Key": request.match_info["name"]})

    async def download(request: web.Request) -> web.Response:
        return web.Response(body=files[request.match_info["name"]])

    async def sign(request: web.Request) -> web.Response:
        return web.json_response({"signedURL": f"/object/signed/{request.match_info['name']}"})

    async def remove(_: web.Request) -> web.Response:
        return web.json_response([])

    app = web.Application()
    app.add_routes([web.post("/auth/v1/token", token),
                    web.get("/rest/v1/conversations", conversations),
                    web.post("/storage/v1/object/sign/media/{name:.+}", sign),
                    web.get("/storage/v1/object/signed/{name:.+}", download),
                    web.post("/storage/v1/object/media/{name:.+}", upload),
                    web.get("/storage/v1/object/authenticated/media/{name:.+}", download),
                    web.delete("/storage/v1/object/media", remove)])  # fmt: skip
    return app


def run_against(upload_ok: int) -> list[Any]:
    async def main() -> Any:
        runner = web.AppRunner(fake_storage(upload_ok))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        project = SupabaseProject(url=f"http://127.0.0.1:{port}", anon_key=ANON,
                                  email="t@e.com", password="pw")  # fmt: skip
        try:
            return await run_storage_checks(project, LOAD)
        finally:
            await runner.cleanup()

    found: list[Any] = asyncio.run(main())
    return found


def test_some_failed_uploads_fail_the_upload_check() -> None:
    upload, download, signed = run_against(upload_ok=3)
    assert upload.status == "fail"
    assert upload.reason.startswith("2 of 5 uploads failed (HTTP 500:"), upload.reason
    assert len(upload.samples) == 3 and upload.evidence["failed"] == 2
    assert upload.summary is not None and upload.value == upload.summary.p95
    # The three files that were uploaded download fine; the signed URL works.
    assert download.status == "pass" and len(download.samples) == 3
    assert signed.status == "pass" and len(signed.samples) == 3


def test_nothing_measured_is_an_error_with_the_reason() -> None:
    upload, download, signed = run_against(upload_ok=0)
    assert upload.status == "error" and upload.reason.startswith("5 of 5 uploads failed")
    assert download.status == "error" and "nothing was uploaded" in download.reason
    assert signed.status == "error"
    assert ANON not in upload.model_dump_json()
