"""Self-check: measure the RTT, downlink and uplink a shaped proxy achieves on loopback.

The measures are those a device would see: a tiny request's round trip (median of
several, on a warm keep-alive connection), then one download and one upload sized to take
about a second at the profile's rate; a transfer's rate is its size over its time minus
the measured round trip.
"""

from __future__ import annotations

import asyncio
import statistics

from devicelab.errors import BadInput, ProbeFailed
from devicelab.models.network import NetworkProfile
from devicelab.models.results import AchievedNetwork, NetworkInfo
from devicelab.netshape.link import SEGMENT_BYTES
from devicelab.netshape.loopback import LoopbackServer, ProxyClient
from devicelab.netshape.proxy import ShapedProxy

__all__ = ["loss_bound_kbps", "measure", "measure_through", "network_info", "transfer_size"]

_RTT_SAMPLES = 5
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


def transfer_size(bytes_per_s: float | None, seconds: float = 1.0) -> int:
    """Bytes that take about ``seconds`` at ``bytes_per_s`` (the maximum when unlimited)."""
    if bytes_per_s is None:
        return _MAX_SIZE
    return max(_MIN_SIZE, min(_MAX_SIZE, int(bytes_per_s * seconds)))


async def _measure(host: str, port: int, profile: NetworkProfile | None) -> AchievedNetwork:
    async with LoopbackServer() as server, ProxyClient(host, port) as client:
        await client.get(f"{server.base}/bytes?n=1")  # warm up: connections, first hooks
        rtts = [await client.get(f"{server.base}/bytes?n=1") for _ in range(_RTT_SAMPLES)]
        rtt = statistics.median(rtts)
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
    # A separate process, as a device sees it: in-process, the GIL would add its own delay.
    with ShapedProxy(profile, host="127.0.0.1", port=0, mode="subprocess") as started:
        return measure_through(started.host, started.port, profile)


def network_info(profile: NetworkProfile, proxy: ShapedProxy | None = None) -> NetworkInfo:
    """``run.network`` of results.json: the profile and, when shaped, what it achieved.

    ``achieved`` is measured through ``proxy`` (or a fresh loopback proxy); it is None for
    an unshaped or offline profile. Raises as ``measure`` does.
    """
    achieved = measure(profile, proxy) if profile.shaped and not profile.offline else None
    return NetworkInfo(
        name=profile.id or profile.label,
        rtt_ms=profile.rtt_ms,
        down_kbps=profile.down_kbps,
        up_kbps=profile.up_kbps,
        loss_pct=profile.loss_pct,
        achieved=achieved,
    )
