"""The harness over a real Chromium page (WebDevice + StaticApp), with a stand-in
``window.devicelab`` whose probes answer, reject, hang or break the contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devicelab.errors import ProbeFailed
from devicelab.harness import Harness, UserLogin
from devicelab.models import Device
from devicelab.platforms.web import StaticApp, WebDevice, answers

PAGE = """<!doctype html><html><body><script>
window.devicelab = {
  version: 1,
  probes: () => ['ok', 'boom', 'hang', 'bad'],
  info: () => ({version: 1, users: 0, app: {reconnect_after_ms: [250]}}),
  configure: async (config) => ({version: 1, users: config.users.map((u, i) => 'id-' + i)}),
  reset: async () => undefined,
  run: async (id, params) => {
    if (id === 'ok') return {samples: [1.5, 2.5], unit: 'ms', evidence: {echo: params}};
    if (id === 'boom') throw new Error('the backend said no');
    if (id === 'hang') return new Promise(() => {});
    return {samples: 'nope'};
  },
};
</script></body></html>"""


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebDevice, str]]:
    """One Chromium for the module (Playwright's sync API allows one per thread) and the
    URL of the stand-in app."""
    root = tmp_path_factory.mktemp("app")
    (root / "index.html").write_text(PAGE)
    device = Device(id="web", platform="web", model="Chromium", os="Debian 12")
    app = StaticApp(root).start()
    url = app.url
    try:
        assert answers(url)
        with WebDevice(device, proxy_url=None) as browser:
            yield browser, url
    finally:
        app.stop()
    assert not answers(url)


@pytest.fixture
def harness(web: tuple[WebDevice, str]) -> Harness:
    browser, url = web
    browser.open(url)
    harness = Harness(browser.evaluate)
    assert harness.wait_ready(timeout_s=10) == ["ok", "boom", "hang", "bad"]
    return harness


def test_a_probe_answers_with_its_samples(harness: Harness) -> None:
    result = harness.run("ok", {"count": 2})
    assert result.samples == [1.5, 2.5] and result.unit == "ms"
    assert result.evidence == {"echo": {"count": 2}}
    assert harness.app == {"reconnect_after_ms": [250]}


def test_configure_returns_the_user_ids(harness: Harness) -> None:
    users = [UserLogin(email="a@example.com", password="pw-a"), UserLogin(email="b", password="x")]
    assert harness.configure(supabase_url="http://127.0.0.1:1", anon_key="k", users=users) == [
        "id-0",
        "id-1",
    ]
    assert "pw-a" not in repr(users[0])


def test_a_rejection_is_probe_failed_with_the_js_message(harness: Harness) -> None:
    with pytest.raises(ProbeFailed, match="probe boom failed: the backend said no"):
        harness.run("boom")


def test_a_hanging_probe_times_out(harness: Harness) -> None:
    with pytest.raises(ProbeFailed, match="no answer within 300 ms"):
        harness.run("hang", timeout_s=0.3)


def test_an_answer_outside_the_contract_is_refused(harness: Harness) -> None:
    with pytest.raises(ProbeFailed, match="outside the contract"):
        harness.run("bad")


def test_a_page_without_the_probe_is_reported(web: tuple[WebDevice, str], tmp_path: Path) -> None:
    browser, _ = web
    (tmp_path / "index.html").write_text("<html><body>not the test app</body></html>")
    app = StaticApp(tmp_path).start()
    try:
        browser.open(app.url)
        with pytest.raises(ProbeFailed, match=r"no window\.devicelab"):
            Harness(browser.evaluate).wait_ready(timeout_s=0.5)
        assert browser.info().os.startswith("Debian 12, Chromium ")
    finally:
        app.stop()


def test_no_build_no_server(tmp_path: Path) -> None:
    with pytest.raises(ProbeFailed, match="no app build"):
        StaticApp(tmp_path).start()
