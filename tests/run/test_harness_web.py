"""The harness over a real Chromium page (WebDevice + StaticApp), with a stand-in
``window.devicelab`` whose probes answer, reject, hang or break the contract."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import ProbeFailed, UnknownId
from devicelab.harness import PROBES, Harness, ProbeTimedOut, UserLogin
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
    if (id === 'hang' || id === 'storage_upload') return new Promise(() => {});
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
    with pytest.raises(ProbeTimedOut, match="no answer within 300 ms") as caught:
        harness.run("hang", timeout_s=0.3)
    assert caught.value.timeout_s == 0.3
    with pytest.raises(ProbeFailed) as rejected:  # a rejection is not a timeout
        harness.run("boom")
    assert not isinstance(rejected.value, ProbeTimedOut)


def test_a_misspelled_probe_is_unknown_before_the_app_is_asked(
    web: tuple[WebDevice, str],
) -> None:
    # The app rejected it, and ProbeFailed's hint sent the user to the network and backend.
    browser, url = web
    browser.open(url)
    sent: list[Any] = []

    def channel(function: str, arg: Any) -> Any:
        sent.append(arg)
        return browser.evaluate(function, arg)

    harness = Harness(channel)
    harness.wait_ready(timeout_s=10)
    sent.clear()
    with pytest.raises(UnknownId) as caught:
        harness.run("messge_delivery", {"count": 1})
    assert (
        caught.value.message == "unknown probe 'messge_delivery'; did you mean 'message_delivery'?"
    )
    assert "known probes: " in caught.value.hint and "local_cache.search" in caught.value.hint
    with pytest.raises(UnknownId, match="did you mean 'boom'"):  # one only the app offers
        harness.run("bomb")
    assert sent == []


def test_the_probe_ids_are_capacitor_harness_ones() -> None:
    index = Path(__file__).resolve().parents[2] / "capacitor-harness/probe/src/index.ts"
    table = index.read_text().split("export const PROBES", 1)[1].split("}", 1)[0]
    assert re.findall(r"^\s+'?([\w.]+)'?:", table, re.M) == list(PROBES)


class _NoLink:
    def go_offline(self, seconds: float | None = None) -> None:
        raise AssertionError("a transfer never drops the link")

    def go_online(self) -> None:
        raise AssertionError("a transfer never drops the link")


def test_a_transfer_that_outlasts_its_target_fails_with_a_lower_bound(harness: Harness) -> None:
    """A 10 MB upload at slow-3g takes 200 s against < 30 s: when the probe gives up, the
    check fails (the target is missed for certain), it is not an error. Here with a 0.2 s
    target and a 0.5 s timeout."""
    from devicelab.models import TargetBook
    from devicelab.models.targets import Target
    from devicelab.scenarios import media_transfer
    from devicelab.scenarios.context import ScenarioContext, ScenarioOptions

    book = TargetBook(
        targets=[
            Target(check=check, op="<", value=0.2, unit="s", source="test")
            for check in ("video_upload_10mb", "image_upload_1mb")
        ]
    )
    ctx = ScenarioContext(
        harness=harness, platform="android", column="4g", book=book,
        options=ScenarioOptions(probe_timeout_s=0.5, image_count=3, video_count=1),
        conversation_id="c", big_conversation_id="c", search_terms=["x"], link=_NoLink(),
    )  # fmt: skip
    check = media_transfer.video_upload(ctx)
    assert check.status == "fail", check
    assert check.value == pytest.approx(0.5) and check.unit == "s"
    assert check.evidence["censored"] is True
    assert "not done within 0.5 s" in check.reason and "< 0.2 s" in check.reason
    from devicelab.cli.run import summary_lines
    from devicelab.models import Results

    results = Results.model_validate(
        {"run": {"id": "r", "kind": "device", "started_at": "2026-11-30T00:00:00Z",
                 "devicelab_version": "0"}, "checks": [check.model_dump(mode="json")]}
    )  # fmt: skip
    assert "FAIL  video_upload_10mb          value >= 0.5 s (target < 0.2 s" in "\n".join(
        summary_lines(results)
    )
    # Three images in 0.5 s: one may have taken only 0.17 s, within the target: no verdict.
    with pytest.raises(ProbeTimedOut):
        media_transfer.image_upload(ctx)


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
