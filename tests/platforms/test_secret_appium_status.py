"""An Appium URL with user:password (a cloud grid) is asked with Basic auth: urllib sends
none of the URL's credentials (it read the host as "user:password@host"), so a grid that
answered was reported as "no Appium server answers"."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devicelab.platforms.appium_server import server_status

_WANTED = "Basic " + base64.b64encode(b"grid user:S3cret@key").decode()


class _Grid(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.headers.get("Authorization") != _WANTED:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"value": {"ready": True}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def grid() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Grid)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_grid_url_with_credentials_is_asked_with_them(grid: int) -> None:
    # Percent-encoded as a URL must carry a space and an "@".
    assert server_status(f"http://grid%20user:S3cret%40key@127.0.0.1:{grid}/wd/hub") == "appium"
    assert server_status(f"http://grid%20user:wrong@127.0.0.1:{grid}/") == "HTTP 401"
    assert server_status(f"http://127.0.0.1:{grid}/") == "HTTP 401"
