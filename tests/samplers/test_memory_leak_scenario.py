"""The memory_leak scenario in a real Chromium page, with stand-in probes (a page that
leaks what each opened conversation loads, and one that releases it): the real Harness,
the real CDP heap after GC, the real trend and judgement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devicelab.config import load_targets
from devicelab.errors import ConfigError
from devicelab.samplers import SampleLog
from devicelab.samplers.web import cdp_heap_reader
from devicelab.scenarios import ScenarioContext, ScenarioOptions, plan
from devicelab.scenarios.memory_leak import LeakOptions, measure

# window.devicelab API 1 with the probes memory_leak calls; "leak" keeps every load.
PROBES = """(leak) => {
  const retained = [];
  window.leaked = [];
  const result = (evidence) => ({samples: [], unit: 'ms', evidence});
  window.devicelab = {
    version: 1, probes: () => ['conversation_list', 'memory.messages', 'message_search',
                               'memory.release'],
    info: () => ({app: {}}),
    run: async (op, params) => {
      await new Promise((r) => setTimeout(r, 20));
      if (op === 'memory.messages') {
        // ~1 MB a load, in the JS heap: 5000 small integers a row (a repeated string may
        // be shared by the engine, and typed arrays live outside the heap).
        const row = (i) => ({id: i, content: Array.from({length: 5000}, (_, k) => k + i)});
        const rows = Array.from({length: params.count}, (_, i) => row(i));
        (leak ? window.leaked : retained).push(rows);
      }
      if (op === 'memory.release') retained.length = 0;
      return result({op});
    },
  };
}"""


def _ctx(page: Any, leak: bool) -> ScenarioContext:
    from devicelab.harness import Harness

    page.evaluate(PROBES, leak)
    harness = Harness(page.evaluate, timeout_s=10)
    harness.wait_ready()
    read = cdp_heap_reader(page)
    return ScenarioContext(
        harness=harness, platform="web", column="web", book=load_targets(),
        options=ScenarioOptions(), conversation_id="c1", big_conversation_id="c2",
        search_terms=["hello"], link=object(),  # type: ignore[arg-type]
        heap_mb=lambda: read()["memory.js_heap_mb"],
    )  # fmt: skip


@pytest.mark.parametrize("leak", [True, False], ids=["leaking-app", "clean-app"])
def test_leak_trend_is_judged(chromium: Any, tmp_path: Path, leak: bool) -> None:
    log = SampleLog(tmp_path / "samples.jsonl")
    options = LeakOptions(duration_s=4, sample_every_s=0.4)
    check = measure(_ctx(chromium, leak), options, log)
    assert check.id == "memory_leak" and check.unit == "MB_per_min"
    # a loaded lab host runs fewer cycles; a handful of readings still gives the trend
    assert check.evidence["readings"] >= 4 and check.evidence["cycles"] >= 4, check.evidence
    assert check.status == ("fail" if leak else "pass"), check.reason
    assert check.value is not None
    assert (check.value > 10) if leak else (abs(check.value) < 1), check.evidence
    assert "shortened run (4 s" in check.reason
    written = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert len(written) == check.evidence["readings"]
    assert {w["metric"] for w in written} == {"memory.js_heap_mb"}
    assert check.target is not None and check.target.unit == "MB_per_min"


def test_registered_and_options_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    [scenario] = plan(["memory_leak"])
    assert scenario.run is not None
    monkeypatch.setenv("DEVICELAB_LEAK_DURATION_S", "20")
    assert LeakOptions.from_env().duration_s == 20
    assert LeakOptions().duration_s == 300  # the story's 5 minutes
    monkeypatch.setenv("DEVICELAB_LEAK_DURATION_S", "-1")
    with pytest.raises(ConfigError, match="leak run option"):
        LeakOptions.from_env()


class _FootprintLike:
    """A reader shaped like the iPhone's AppFootprint: it reads through a sampler (which
    logs the readings and is held for the whole run), and its garbage is collected by the
    next script call."""

    SOURCE = "sysmontap"
    LEAK_SERIES = "memory.footprint_mb"
    LEAK_HOW = "footprint of the test"
    VIA_SAMPLER = True
    GC_BY_SCRIPT = True

    def __init__(self, read: Any, events: list[str]) -> None:
        self.read, self.events, self.held = read, events, False

    def __call__(self) -> float:
        self.events.append("read" if self.held else "read outside the hold")
        return float(self.read())

    def __enter__(self) -> _FootprintLike:
        self.held = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.held = False


def test_a_footprint_reader_is_held_read_after_a_script_call_and_not_logged_twice(
    chromium: Any, tmp_path: Path
) -> None:
    ctx = _ctx(chromium, leak=False)
    events: list[str] = []
    ready = ctx.harness.wait_ready

    def counted_ready(timeout_s: float = 30.0) -> list[str]:
        events.append("script")
        return ready(timeout_s)

    ctx.harness.wait_ready = counted_ready  # type: ignore[method-assign]
    heap = ctx.heap_mb
    assert heap is not None
    ctx.heap_mb = _FootprintLike(heap, events)
    log = SampleLog(tmp_path / "samples.jsonl")
    check = measure(ctx, LeakOptions(duration_s=2, sample_every_s=0.4), log)
    assert check.status in ("pass", "fail"), check.reason
    reads = [i for i, e in enumerate(events) if e.startswith("read")]
    assert len(reads) == check.evidence["readings"] >= 3
    assert all(events[i] == "read" and events[i - 1] == "script" for i in reads), events
    assert check.evidence["series"] == "memory.footprint_mb"
    assert str(check.evidence["how"]).startswith("footprint of the test, every 0.4 s")
    # The reader logs its own readings (the sampler's footprint series): none written here.
    assert not log.path.exists() or log.path.read_text() == ""
