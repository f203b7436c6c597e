"""Self-check: measure the RTT, downlink and uplink a shaped proxy achieves on loopback.

The measures are those a device would see: a tiny request's round trip (median of
several, on a warm keep-alive connection), then one download and one upload sized to take
about a second at the profile's rate; a transfer's rate is its size over its time minus
the measured round trip.

On a lossy link a tiny round trip that meets a loss takes a whole RTT more (the segment
is sent again), so the median of five was the doubled RTT about one run in eight at 10 %
loss. There the RTT is the median of the round trips that met no loss: samples are taken
until at least ``_RTT_SAMPLES`` of them lie within half an RTT of the fastest (a loss
puts a sample a whole RTT above it, far beyond the jitter) and the fastest lies within half
an RTT of the profile's (five that all met a loss are alike too), at most
``_RTT_SAMPLES_MAX``.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from devicelab.errors import BadInput, ProbeFailed
from devicelab.models.network import NetworkProfile
from devicelab.models.results import AchievedNetwork, NetworkInfo
from devicelab.netshape.link import SEGMENT_BYTES
from devicelab.netshape.loopback import LoopbackServer, ProxyClient

if TYPE_CHECKING:
    from devicelab.netshape.proxy import ShapedProxy

__all__ = [
    "RTT_METHOD",
    "SelfCheck",
    "link_rtt",
    "loss_bound_kbps",
    "measure",
    "measure_through",
    "network_info",
    "self_check",
    "transfer_size",
]

_RTT_SAMPLES = 5
_RTT_SAMPLES_MAX = 40
_MIN_SIZE = 32 << 10
_MAX_SIZE = 32 << 20


def loss_bound_kbps(profile: NetworkProfile) -> tuple[float | None, float | None] | None:
    """(down, up) in kbps that a transfer can reach through the link's loss model, or None
    for a profile without loss. Each lost segment is sent again (its bytes count twice) and
    costs a round trip (docs/netshape.md, Loss), so with loss the achieved rates sit well
    below the profile's: 10 % loss at 1 Mbit/s and 1 s RTT leaves about 105 kbps."""
    p = profile.loss_pct / 100
    if p <= 0:
        return None
    stall_per_byte = p * (profile.rtt / 1000) / SEGMENT_BYTES

    def rate(bytes_per_s: float | None) -> float | None:
        per_byte = stall_per_byte + ((1 + p) / bytes_per_s if bytes_per_s else 0.0)
        return 8 / per_byte / 1000 if per_byte > 0 else None

    return rate(profile.down_bytes_per_s), rate(profile.up_bytes_per_s)


#: How ``measure`` takes the RTT, in words for the check's output.
RTT_METHOD = (
    "median of tiny round trips on a warm connection; on a lossy link, those that met a loss"
    " (a whole RTT more) are left out"
)


def transfer_size(bytes_per_s: float | None, seconds: float = 1.0) -> int:
    """Bytes that take about ``seconds`` at ``bytes_per_s`` (the maximum when unlimited)."""
    if bytes_per_s is None:
        return _MAX_SIZE
    return max(_MIN_SIZE, min(_MAX_SIZE, int(bytes_per_s * seconds)))


async def link_rtt(
    round_trip: Callable[[], Awaitable[float]], profile: NetworkProfile | None
) -> float:
    """The link's RTT in seconds from tiny round trips timed by ``round_trip``: their
    median, leaving out on a lossy ``profile`` those that met a loss (see the module's
    docstring). Raises what ``round_trip`` raises."""
    rtts = [await round_trip() for _ in range(_RTT_SAMPLES)]
    if profile is None or profile.loss_pct <= 0:
        return statistics.median(rtts)

    half_rtt = profile.rtt / 1000 / 2

    def loss_free() -> list[float]:
        fastest = min(rtts)
        return [r for r in rtts if r < fastest + half_rtt]

    def enough() -> bool:
        # Five alike are not five loss-free ones when all five met a loss (3.5 % of
        # checks at 30 % loss): then even the fastest is a whole RTT over the profile's.
        fastest_fits = min(rtts) < profile.rtt / 1000 + half_rtt
        return len(loss_free()) >= _RTT_SAMPLES and fastest_fits

    while not enough() and len(rtts) < _RTT_SAMPLES_MAX:
        rtts.append(await round_trip())
    return statistics.median(loss_free())


async def _measure(host: str, port: int, profile: NetworkProfile | None) -> AchievedNetwork:
    async with LoopbackServer() as server, ProxyClient(host, port) as client:
        await client.get(f"{server.base}/bytes?n=1")  # warm up: connections, first hooks
        rtt = await link_rtt(lambda: client.get(f"{server.base}/bytes?n=1"), profile)
        down = transfer_size(profile.down_bytes_per_s if profile else None)
        down_s = await client.get(f"{server.base}/bytes?n={down}")
        up = transfer_size(profile.up_bytes_per_s if profile else None)
        up_s = await client.post(f"{server.base}/sink", up)

    def kbps(size: int, seconds: float) -> float:
        return round(size * 8 / 1000 / max(seconds - rtt, 1e-6), 1)

    return AchievedNetwork(
        rtt_ms=round(rtt * 1000, 2), down_kbps=kbps(down, down_s), up_kbps=kbps(up, up_s)
    )


def measure_through(
    host: str, port: int, profile: NetworkProfile | None, timeout_s: float = 120.0
) -> AchievedNetwork:
    """Measure through a running proxy at ``host:port`` that shapes with ``profile``.

    Returns the achieved figures; raises ProbeFailed when the proxy does not answer.
    """
    try:
        return asyncio.run(asyncio.wait_for(_measure(host, port, profile), timeout_s))
    except (OSError, TimeoutError) as exc:
        raise ProbeFailed(
            f"self-check through {host}:{port} failed: {exc or type(exc).__name__}",
            hint="is the proxy running and is 127.0.0.1 in its allow-list?",
        ) from exc


def measure(profile: NetworkProfile, proxy: ShapedProxy | None = None) -> AchievedNetwork:
    """Measure ``profile`` through ``proxy`` (or a fresh loopback proxy started for it).

    Returns the achieved RTT (ms), downlink and uplink (kbps). Raises BadInput for the
    offline profile (nothing to measure), ProbeFailed when the measure fails and
    EnvironmentProblem when no proxy can start.
    """
    if profile.offline:
        raise BadInput(
            f"network {profile.id or profile.label} is offline: there is nothing to measure",
            hint="check a shaped profile, e.g. 4g",
        )
    if proxy is not None:
        return measure_through(proxy.host, proxy.port, profile)
    # Imported here: results.json's run.network (``network_info``) needs no mitmproxy.
    from devicelab.netshape.proxy import ShapedProxy

    # A separate process, as a device sees it: in-process, the GIL would add its own delay.
    with ShapedProxy(profile, host="127.0.0.1", port=0, mode="subprocess") as started:
        return measure_through(started.host, started.port, profile)


def network_info(
    profile: NetworkProfile, proxy: ShapedProxy | None = None, *, measured: bool = True
) -> NetworkInfo:
    """``run.network`` of results.json: the profile and, when shaped, what it achieved.

    The one place a NetworkInfo is made of a profile, so that ``proxy check --json`` and
    a run's results.json describe a profile alike. ``rtt_ms`` is None (null) with no
    shaped link (``none``, ``offline``), 0 for a shaped profile that adds no delay (a
    missing RTT reads as 0, and is judged as 0); ``down_kbps`` / ``up_kbps`` are None when
    unlimited.

    ``achieved`` is measured through ``proxy`` (or a fresh loopback proxy) when
    ``measured``; it is None for an unshaped or offline profile, or when not ``measured``
    (nothing is started then). Raises as ``measure`` does.
    """
    shaped = profile.shaped and not profile.offline
    achieved = measure(profile, proxy) if measured and shaped else None
    return NetworkInfo(
        name=profile.id or profile.label,
        # A shaped link without a delay keeps its 0: its RTT is still held to the proxy's
        # own overhead; with no link at all (none, offline) there is no figure.
        rtt_ms=profile.rtt_ms if shaped else None,
        down_kbps=profile.down_kbps,
        up_kbps=profile.up_kbps,
        loss_pct=profile.loss_pct,
        jitter_ms=profile.jitter_ms,
        achieved=achieved,
    )


@dataclass(frozen=True)
class SelfCheck:
    """What ``self_check`` found: ``network`` is the profile as results.json writes it,
    with the achieved figures (measured for ``none`` too: what the bare proxy does);
    ``verdict`` pass|fail|skip (skip: an unshaped profile, nothing to hold the link to);
    ``off`` one line per figure off the profile (``NetworkInfo.off_profile``)."""

    network: NetworkInfo
    verdict: Literal["pass", "fail", "skip"]
    off: list[str]

    @property
    def achieved(self) -> AchievedNetwork:
        """The achieved figures (always measured by ``self_check``)."""
        assert self.network.achieved is not None
        return self.network.achieved


def self_check(profile: NetworkProfile) -> SelfCheck:
    """Measure ``profile`` through a fresh loopback proxy and judge the link against it.

    A link found off is measured once more and is off only when the second measurement
    says so too. Returns the SelfCheck; raises as ``measure`` does (BadInput for the
    offline profile, ProbeFailed, EnvironmentProblem).
    """
    described = network_info(profile, measured=False)

    def judged() -> tuple[NetworkInfo, list[str]]:
        network = described.model_copy(update={"achieved": measure(profile)})
        return network, network.off_profile() if profile.shaped else []

    network, off = judged()
    if off:
        # One busy second (another job's burst) read a 4g download at -15 %: a link is
        # off only when a second measurement says so too.
        network, off = judged()
    verdict: Literal["pass", "fail", "skip"] = "skip"
    if profile.shaped:
        verdict = "fail" if off else "pass"
    return SelfCheck(network, verdict, off)
