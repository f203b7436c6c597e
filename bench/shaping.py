"""Benchmark: devicelab's shaped proxy vs the ideal link vs Chromium's CDP throttling.

Everything runs on loopback: an aiohttp upstream server and the clients share one event
loop in this process; the shaped proxy runs in its own process (as devices see it);
Chromium (/usr/bin/chromium through Playwright) talks to the server directly, throttled
with ``Network.emulateNetworkConditions`` set to the same profile.

Rows per network: downloads of 100 KB, 1 MB and 5 MB, a 1 MB upload, a tiny request, a
tiny request during two concurrent 1 MB downloads, and the worst message of a 10-message
WebSocket burst (server to device). ``ideal`` is RTT + size / bandwidth (one-way delay for
a WebSocket message); ``closer`` names which of devicelab and CDP is nearer to it, ``on
the wire`` which is nearer to it plus the HTTP heads' bytes at the profile's rates (a real
link carries them; CDP's throttling does not charge them, devicelab's link does). Under each
table: where the tiny request's time over the RTT goes. Then the unshaped overhead: added
latency p50/p95 and throughput through the proxy against direct.

Goals (issue 3): the per-row ``goal`` column; devicelab closer to the ideal than CDP on
every row ("better than CDP on every row"); unshaped, added latency p50 <= 5 ms and
throughput >= 100 MB/s through the proxy. Each is judged (meets/misses); exit 1 on a miss.

    .venv/bin/python bench/shaping.py [--networks 4g,5g] [--no-cdp] [--json out.json]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _cli  # bench/_cli.py: this script's folder is on sys.path
import aiohttp
from aiohttp import web

from devicelab.config import network_profile
from devicelab.errors import ProbeFailed, first_line
from devicelab.models.network import NetworkProfile
from devicelab.netshape.proxy import ShapedProxy
from devicelab.testing.upstream import upstream_app

KB, MB = 1000, 1_000_000
#: Issue 3's goals for the unshaped proxy (no profile) against direct.
GOAL_ADDED_P50_MS = 5.0
GOAL_THROUGHPUT_MB_S = 100.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--headless=new",
]


# --- upstream server ---------------------------------------------------------------------
async def start_server() -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(upstream_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


# --- measures through the proxy (aiohttp client) ----------------------------------------
async def _get(s: aiohttp.ClientSession, url: str, proxy: str | None) -> float:
    start = time.perf_counter()
    async with s.get(url, proxy=proxy) as r:
        async for _ in r.content.iter_chunked(1 << 20):
            pass
    return time.perf_counter() - start


def tiny_start_s(profile: NetworkProfile) -> float:
    """When the tiny request of the "during 2 downloads" row starts: 0.3 s, or earlier on a
    fast link, so that it starts while the two downloads are still in flight (at 5G they
    take ~0.17 s)."""
    rate = profile.down_bytes_per_s
    if rate is None:
        return 0.3
    return min(0.3, profile.rtt / 1000 + 0.4 * 2 * MB / rate)


async def _head_bytes(s: aiohttp.ClientSession, url: str, proxy: str) -> tuple[int, int]:
    """Bytes of the request head (absolute form, as sent to a proxy) and of the response
    head of one GET of ``url``: what the link carries besides the body."""
    async with s.get(url, proxy=proxy) as r:
        await r.read()
        sent = r.request_info.headers
        up = len(f"GET {url} HTTP/1.1\r\n") + sum(len(k) + len(v) + 4 for k, v in sent.items())
        down = len(f"HTTP/1.1 {r.status} {r.reason}\r\n") + sum(
            len(k) + len(v) + 4 for k, v in r.raw_headers
        )
    return up + 2, down + 2


async def machine_wake_s(base: str, idle_s: float) -> tuple[float, float]:
    """(median direct tiny request after ``idle_s`` of idle, back to back): what this
    machine adds to a request that follows an idle spell, with no proxy involved. Through
    the proxy every tiny request follows one (the link holds it for the one-way delay)."""
    async with aiohttp.ClientSession() as s:
        await _get(s, f"{base}/bytes?n=1", None)
        hot = statistics.median([await _get(s, f"{base}/bytes?n=1", None) for _ in range(9)])
        cold = []
        for _ in range(5):
            await asyncio.sleep(idle_s)
            cold.append(await _get(s, f"{base}/bytes?n=1", None))
    return statistics.median(cold), hot


async def ours(base: str, proxy: str, sizes: list[int], later_s: float) -> dict[str, float]:
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as s:
        out["tiny head bytes up"], out["tiny head bytes down"] = await _head_bytes(
            s, f"{base}/bytes?n=1", proxy
        )
        out["tiny"] = statistics.median(
            [await _get(s, f"{base}/bytes?n=1", proxy) for _ in range(5)]
        )
        for size in sizes:
            out[f"down {size // KB} KB"] = await _get(s, f"{base}/bytes?n={size}", proxy)
        start = time.perf_counter()
        async with s.post(f"{base}/sink", data=b"u" * MB, proxy=proxy) as r:
            await r.read()
        out["up 1000 KB"] = time.perf_counter() - start

        async def tiny_later() -> float:
            await asyncio.sleep(later_s)
            return await _get(s, f"{base}/bytes?n=10", proxy)

        bulk = f"{base}/bytes?n={MB}"
        *_, out["tiny during 2 downloads"] = await asyncio.gather(
            _get(s, bulk, proxy), _get(s, bulk, proxy), tiny_later()
        )
        async with s.ws_connect(f"{base}/ws", proxy=proxy) as ws:
            await ws.send_str("burst 10")
            lags = []
            for _ in range(10):
                msg = await ws.receive(timeout=30)
                lags.append(time.time() - float(msg.data.split()[1]) / 1000)
        out["ws burst worst msg"] = max(lags)
    return out


# --- the same through Chromium's CDP throttling -----------------------------------------
_PAGE_JS = """
async ([base, sizes, laterMs]) => {
  const t = async (f) => {
    const s = performance.now(); await f(); return (performance.now() - s) / 1000;
  };
  const get = (u) => t(async () => {
    const r = await fetch(u, {cache: 'no-store'}); await r.arrayBuffer();
  });
  const out = {};
  await get(base + '/bytes?n=1');
  const tinies = [];
  for (let i = 0; i < 5; i++) tinies.push(await get(base + '/bytes?n=1'));
  tinies.sort((a, b) => a - b); out['tiny'] = tinies[2];
  for (const n of sizes) out['down ' + (n / 1000) + ' KB'] = await get(base + '/bytes?n=' + n);
  const body = new Uint8Array(1000000);
  out['up 1000 KB'] = await t(async () => {
    const r = await fetch(base + '/sink', {method: 'POST', body}); await r.text();
  });
  const bulk = base + '/bytes?n=1000000';
  const later = new Promise(r => setTimeout(r, laterMs)).then(() => get(base + '/bytes?n=10'));
  const res = await Promise.all([get(bulk), get(bulk), later]);
  out['tiny during 2 downloads'] = res[2];
  out['ws burst worst msg'] = await new Promise((resolve) => {
    const ws = new WebSocket(base.replace('http', 'ws') + '/ws'); const lags = [];
    ws.onopen = () => ws.send('burst 10');
    ws.onmessage = (e) => { lags.push((Date.now() - Number(e.data.split(' ')[1])) / 1000);
      if (lags.length === 10) { ws.close(); resolve(Math.max(...lags)); } };
  });
  return out;
}
"""


async def cdp(base: str, profile: NetworkProfile, sizes: list[int]) -> dict[str, float]:
    """CDP's figures for ``profile``: Chromium fetching from ``base``, throttled.

    Raises ProbeFailed when Chromium or its driver fails.
    """
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    # Chromium's profile and what it puts in $TMPDIR (org.chromium.Chromium.*) go in a
    # folder of ours, removed on every way out: an interrupted Chromium leaves them behind.
    with tempfile.TemporaryDirectory(
        prefix="devicelab-bench-chromium-", ignore_cleanup_errors=True
    ) as scratch:
        async with async_playwright() as pw:
            context = None
            try:
                context = await pw.chromium.launch_persistent_context(
                    str(Path(scratch) / "profile"),
                    executable_path=CHROMIUM,
                    args=CHROMIUM_ARGS,
                    env={**os.environ, "TMPDIR": scratch},
                )
                return await _cdp_page(context, base, profile, sizes)
            except PlaywrightError as exc:
                # Ctrl-C in a terminal kills the driver too, often before asyncio delivers
                # the cancellation to this task: let it arrive (then it wins: exit 130).
                await asyncio.sleep(0.2)
                raise ProbeFailed(
                    f"Chromium (CDP) failed: {first_line(exc)}",
                    hint=f"check that {CHROMIUM} starts, or pass --no-cdp",
                ) from exc
            finally:
                if context is not None:
                    with contextlib.suppress(PlaywrightError):
                        await context.close()


async def _cdp_page(
    context: Any, base: str, profile: NetworkProfile, sizes: list[int]
) -> dict[str, float]:
    """The page's measures in a launched Chromium ``context``."""
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto(base + "/")
    session = await page.context.new_cdp_session(page)
    await session.send("Network.enable")
    await session.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": profile.rtt,
            "downloadThroughput": profile.down_bytes_per_s or -1,
            "uploadThroughput": profile.up_bytes_per_s or -1,
        },
    )
    later_ms = tiny_start_s(profile) * 1000
    result: dict[str, float] = await page.evaluate(_PAGE_JS, [base, sizes, later_ms])
    return result


def ideal(profile: NetworkProfile, row: str) -> float:
    if row.startswith("down"):
        return profile.ideal_download_s(int(row.split()[1]) * KB)
    if row.startswith("up"):
        return profile.ideal_upload_s(int(row.split()[1]) * KB)
    if row.startswith("ws"):
        return (profile.down_delay_ms or 0) / 1000
    return profile.rtt / 1000


def goal(profile: NetworkProfile, row: str, value: float) -> str:
    want = ideal(profile, row)
    if row in ("down 1000 KB", "down 5000 KB") and profile.id in ("4g", "fast-3g", "slow-3g"):
        return "ok" if abs(value - want) <= 0.05 * want else "MISS (±5 %)"
    if row == "tiny":
        return "ok" if value <= want + 0.010 else "MISS (+10 ms)"
    if row == "tiny during 2 downloads":
        return "ok" if value <= 2 * want + 0.100 else "MISS (2 RTT + 100 ms)"
    if row.startswith("ws"):
        return "ok" if value <= want + 0.020 else "MISS (+20 ms)"
    return ""


def head_s(profile: NetworkProfile, heads: tuple[float, float]) -> float:
    """Seconds the request and response heads (bytes up, down) take at the profile's
    rates: a real link carries them, the ideal (body only) does not count them."""
    up, down = heads
    up_rate, down_rate = profile.up_bytes_per_s, profile.down_bytes_per_s
    return (up / up_rate if up_rate else 0) + (down / down_rate if down_rate else 0)


def table(
    name: str, profile: NetworkProfile, mine: dict[str, float], theirs: dict[str, float]
) -> tuple[dict[str, dict[str, Any]], tuple[float, float]]:
    """Print one network's markdown table; returns its rows for the JSON report and the
    tiny request's head bytes (up, down), which ``mine`` carries under their own keys.

    ``closer`` judges against the issue's ideal (RTT + body / bandwidth); ``on the wire``
    against the same plus the HTTP heads' bytes (WebSocket rows: the same ideal), which a
    real link, and devicelab's, carries and CDP's throttling does not charge."""
    print(f"\n## {name}: RTT {profile.rtt:g} ms, {profile.down_kbps:g}/{profile.up_kbps:g} kbps")
    print("| row | ideal s | devicelab s | err | CDP s | CDP err | closer | on the wire | goal |")
    print("|---|---:|---:|---:|---:|---:|---|---|---|")
    rows: dict[str, dict[str, Any]] = {}
    heads = (mine.pop("tiny head bytes up"), mine.pop("tiny head bytes down"))
    for row, value in mine.items():
        want = ideal(profile, row)
        wire = want if row.startswith("ws") else want + head_s(profile, heads)
        other = theirs.get(row)
        err = (value - want) / want * 100
        cerr = (other - want) / want * 100 if other is not None else None
        closer = wire_closer = "-"
        if other is not None:
            closer = "devicelab" if abs(value - want) <= abs(other - want) else "CDP"
            wire_closer = "devicelab" if abs(value - wire) <= abs(other - wire) else "CDP"
        cells = [
            row,
            f"{want:.3f}",
            f"{value:.3f}",
            f"{err:+.1f} %",
            "-" if other is None else f"{other:.3f}",
            "-" if cerr is None else f"{cerr:+.1f} %",
            closer,
            wire_closer,
            goal(profile, row, value),
        ]
        print("| " + " | ".join(cells) + " |")
        rows[row] = {
            "ideal_s": want, "wire_ideal_s": wire, "devicelab_s": value, "cdp_s": other,
            "closer": None if other is None else closer,
            "on_the_wire": None if other is None else wire_closer,
            "goal": cells[-1] or None,
        }  # fmt: skip
    return rows, heads


def tiny_breakdown(
    profile: NetworkProfile, tiny_s: float, heads: tuple[float, float], wake: tuple[float, float]
) -> str:
    """Where a tiny request's time over the RTT goes: its head bytes at the profile's
    rates (a real link carries them; the ideal counts the body only), this machine's
    wake-up after an idle spell (measured with no proxy), and the rest (the proxy)."""
    up, down = heads
    heads_s = head_s(profile, heads)
    over = tiny_s - profile.rtt / 1000
    cold, hot = wake
    rest = over - heads_s - (cold - hot)
    return (
        f"tiny, over the RTT: {over * 1000:+.1f} ms = head bytes {up:.0f} B up + {down:.0f} B "
        f"down at the profile's rates {heads_s * 1000:.1f} ms + this machine's wake-up after "
        f"{profile.rtt:g} ms idle {(cold - hot) * 1000:.1f} ms (a direct request: {hot * 1000:.2f}"
        f" ms back to back, {cold * 1000:.2f} ms after the idle) + the rest {rest * 1000:+.1f} ms"
    )


async def overhead(base: str) -> dict[str, float]:
    """Added latency (keep-alive and new connection) and throughput, proxy vs direct."""
    with ShapedProxy(None, mode="subprocess") as proxy:
        figures: dict[str, float] = {}
        for label, via in (("direct", None), ("proxy", proxy.url)):
            async with aiohttp.ClientSession() as s:
                await _get(s, f"{base}/bytes?n=1", via)
                lat = sorted([await _get(s, f"{base}/bytes?n=1", via) for _ in range(200)])
                size = 200 * MB
                took = await _get(s, f"{base}/bytes?n={size}", via)
            fresh = []
            for _ in range(30):
                async with aiohttp.ClientSession() as s:
                    fresh.append(await _get(s, f"{base}/bytes?n=1", via))
            figures[f"{label} p50"] = statistics.median(lat)
            figures[f"{label} p95"] = lat[int(len(lat) * 0.95)]
            figures[f"{label} new-conn p50"] = statistics.median(fresh)
            figures[f"{label} MB/s"] = size / took / MB
    return figures


def judge_rows(name: str, rows: dict[str, dict[str, Any]]) -> list[tuple[str, bool | None]]:
    """One network's goals under its table: the ``goal`` column's rows (all ok) and
    "closer than CDP" on every row (not judged without CDP). Returns (line, verdict)
    pairs, verdict None when not judged."""
    judged = [r["goal"] for r in rows.values() if r["goal"]]
    ok = sum(goal == "ok" for goal in judged)
    met = ok == len(judged)
    out: list[tuple[str, bool | None]] = [
        (f"{name}: goal column ok on {ok} of {len(judged)} rows "
         f"({_cli.verdict(met)} the goal: ok on every row)", met),
    ]  # fmt: skip
    compared = [r for r in rows.values() if r["closer"] is not None]
    if not compared:
        out.append((f"{name}: closer than CDP: not judged (no CDP rows)", None))
        return out
    closer = sum(r["closer"] == "devicelab" for r in compared)
    wire = sum(r["on_the_wire"] == "devicelab" for r in compared)
    met = closer == len(compared)
    out.append(
        (f"{name}: closer than CDP on {closer} of {len(compared)} rows "
         f"({_cli.verdict(met)} the goal: closer than CDP on every row); "
         f"on the wire on {wire} of {len(compared)}", met)
    )  # fmt: skip
    return out


def judge_unshaped(figures: dict[str, float]) -> list[tuple[str, bool | None]]:
    """The unshaped overhead's lines, the goals judged: added latency p50 <= 5 ms,
    throughput through the proxy >= 100 MB/s. Returns (line, verdict) pairs (None: a
    figure with no goal)."""
    out: list[tuple[str, bool | None]] = []
    for kind in ("p50", "p95", "new-conn p50"):
        added = (figures[f"proxy {kind}"] - figures[f"direct {kind}"]) * 1000
        if kind == "p50":
            met = added <= GOAL_ADDED_P50_MS
            words = f" ({_cli.verdict(met)} the goal <= {GOAL_ADDED_P50_MS:g} ms)"
            out.append((f"added latency {kind}: {added:.2f} ms{words}", met))
        else:
            out.append((f"added latency {kind}: {added:.2f} ms", None))
    proxy_rate, direct_rate = figures["proxy MB/s"], figures["direct MB/s"]
    met = proxy_rate >= GOAL_THROUGHPUT_MB_S
    out.append(
        (f"throughput: proxy {proxy_rate:.0f} MB/s, direct {direct_rate:.0f} MB/s "
         f"({_cli.verdict(met)} the goal >= {GOAL_THROUGHPUT_MB_S:g} MB/s)", met)
    )  # fmt: skip
    return out


def goals_json(judged: list[tuple[str, bool | None]]) -> list[dict[str, str]]:
    """The judged lines for --json: each line and its verdict (meets|misses)."""
    return [{"goal": line, "verdict": _cli.verdict(met)} for line, met in judged if met is not None]


async def measure(args: Any, profiles: dict[str, NetworkProfile]) -> int:
    """The runs and the printout of main; returns its exit code."""
    sizes = [100 * KB, 1 * MB, 5 * MB]
    runner, base = await start_server()
    report: dict[str, Any] = {"networks": {}}
    judged: list[tuple[str, bool | None]] = []
    try:
        for name, profile in profiles.items():
            with ShapedProxy(profile, mode="subprocess") as proxy:
                mine = await ours(base, proxy.url, sizes, tiny_start_s(profile))
            theirs = {} if args.no_cdp else await cdp(base, profile, sizes)
            rows, heads = table(name, profile, mine, theirs)
            for line, _ in (verdicts := judge_rows(name, rows)):
                print(line)
            judged += verdicts
            wake = await machine_wake_s(base, profile.rtt / 1000)
            print("\n" + tiny_breakdown(profile, mine["tiny"], heads, wake))
            report["networks"][name] = rows
        figures = await overhead(base)
        report["unshaped"] = figures
        print("\n## unshaped overhead (proxy vs direct)")
        for line, _ in (verdicts := judge_unshaped(figures)):
            print(line)
        judged += verdicts
    finally:
        await runner.cleanup()
    report["goals"] = goals_json(judged)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return _cli.exit_code([met for _, met in judged if met is not None])


def main(argv: list[str] | None = None) -> int:
    """Run the bench; returns 0 when every goal is met, 1 when one is missed.

    Raises UnknownId (an unknown network, before anything starts), DeviceLabError.
    """
    parser = _cli.parser("shaping", __doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=_cli.names, default="slow-3g,fast-3g,4g,5g")
    parser.add_argument("--no-cdp", action="store_true")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    profiles = {name: network_profile(name) for name in args.networks}
    return asyncio.run(measure(args, profiles))


if __name__ == "__main__":
    _cli.run("shaping", main)
