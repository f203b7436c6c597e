"""How "all users connected" states the peak connected at once (an outside tester:
"at most 98 connected at once" under a role's CONNECTION LIMIT 50, when the 1000-user
step's two load processes each peaked near 50 at their own moments)."""

from __future__ import annotations

from backend_checks.load import judge_step
from backend_checks.load.models import CpuReport, OpStats, StatsDelta, StepResult
from devicelab.config import load_targets


def _step(processes: int, peak: int) -> StepResult:
    op = OpStats(count=10, errors=0, throughput_per_s=1, p50_ms=1, p95_ms=1, p99_ms=1,
                 max_ms=1, mean_ms=1, service_p95_ms=1)  # fmt: skip
    return StepResult(
        users=1000, processes=processes, mix={"conversation_list": 1}, mode="closed",
        rate_per_s=None, duration_s=5, started_s=0, connected=98, peak_connected=peak,
        connect_failures=1840, exhaustion=1840, ops={"conversation_list": op}, total=op,
        errors={}, cpu=CpuReport(method="none"), deltas=StatsDelta(statements_available=False),
        timeline_t=[], timeline_throughput=[], timeline_p95_ms=[],
    )  # fmt: skip


def _connected(step: StepResult) -> str:
    criteria = {c.name: c for c in judge_step(step, load_targets())}
    return criteria["all users connected"].detail


def test_summed_peaks_are_named_as_a_sum_not_a_count_at_once() -> None:
    detail = _connected(_step(processes=2, peak=98))
    assert "at most 98" not in detail, detail
    assert "up to 98 connected at once (the sum of each of the 2 load processes' peaks)" in detail


def test_one_process_peak_keeps_its_words() -> None:
    assert _connected(_step(processes=1, peak=49)).endswith("; at most 49 connected at once")
