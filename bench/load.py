"""Bench: is our load generator the bottleneck? Read mix, 1000 users, ours vs pgbench.

Both run the same statements (``backend_checks.load.mix``: conversation list, fetch
messages, search, each after the PostgREST-style identity statement), with the same
weights, as the same 1000 app users (client k is user k), prepared, closed loop, on the
same server, one after the other. pgbench is C and costs the server almost nothing, so
its throughput is the server's; ours must reach >= 0.5 x of it (issue 4, item 9).

    python bench/load.py [--dsn DSN --allow-writes] [--users 1000] [--duration 20]
                         [--rounds 2] [--messages 100000]

Without --dsn it uses the managed cluster (database devicelab_bench_load, generated once).
pgbench helper tables live in schema devicelab_bench and are dropped at the end.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _cli  # bench/_cli.py: this script's folder is on sys.path

from backend_checks.db import connect
from backend_checks.load import LoadOptions, run_load
from backend_checks.load.mix import IDENTITY_SQL, SEARCH_TERMS, mix_weights, operation
from backend_checks.load.runner import fetch_identities
from devicelab.errors import BadInput, ProbeFailed, ToolMissing, UnsafeActionRefused

SLOTS = 20  # conversations per user in the pgbench lookup table
GOAL = 0.5


def _pgbench() -> str:
    found = shutil.which("pgbench") or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))[::-1]), None
    )
    if not found:
        raise ToolMissing("pgbench", hint="apt-get install postgresql-client-15")
    return found


def _prepare(dsn: str, users: int, messages: int, generate: bool) -> int:
    """Data (generated when the database is empty) and the pgbench lookup tables."""
    import psycopg

    with connect(dsn, autocommit=True) as conn:
        has_data = conn.execute("SELECT to_regclass('public.conversations')").fetchone()
        if (
            not has_data
            or has_data[0] is None
            or not conn.execute("SELECT 1 FROM public.conversations LIMIT 1").fetchone()
        ):
            if not generate:
                raise BadInput(
                    "the database has no messaging data", hint="run devicelab backend datagen"
                )
            from backend_checks.datagen import DatagenParams
            from backend_checks.datagen import generate as datagen

            with psycopg.connect(dsn) as wconn:
                report = datagen(
                    wconn, DatagenParams(messages=messages, users=max(2000, users)),
                    allow_writes=True,
                )  # fmt: skip
            print(f"generated {report.counts} in {report.seconds:.1f} s")
        identities = fetch_identities(conn, users)
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("DROP SCHEMA IF EXISTS devicelab_bench CASCADE")
        conn.execute("CREATE SCHEMA devicelab_bench")
        conn.execute("CREATE TABLE devicelab_bench.users (n int PRIMARY KEY, claims text)")
        conn.execute(
            "CREATE TABLE devicelab_bench.convs (n int, k int, conv uuid, PRIMARY KEY (n, k))"
        )
        conn.execute("CREATE TABLE devicelab_bench.terms (n int PRIMARY KEY, term text)")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO devicelab_bench.users VALUES (%s, %s)",
                [(i + 1, ident.claims) for i, ident in enumerate(identities)],
            )
            cur.executemany(
                "INSERT INTO devicelab_bench.convs VALUES (%s, %s, %s)",
                [
                    (i + 1, k + 1, ident.conversations[k % len(ident.conversations)])
                    for i, ident in enumerate(identities)
                    for k in range(SLOTS)
                ],
            )
            cur.executemany(
                "INSERT INTO devicelab_bench.terms VALUES (%s, %s)",
                [(i + 1, term) for i, term in enumerate(SEARCH_TERMS)],
            )
        conn.execute("GRANT USAGE ON SCHEMA devicelab_bench TO authenticated")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA devicelab_bench TO authenticated")
        conn.execute("ANALYZE devicelab_bench.users, devicelab_bench.convs, devicelab_bench.terms")
        return len(identities)


def pgbench_scripts(folder: Path, identities: int) -> list[tuple[Path, int]]:
    """One pgbench script per read operation, from the same SQL as our users run."""
    assert IDENTITY_SQL.count("%s") == 1
    scripts = []
    for name, weight in mix_weights("read").items():
        op = operation(name)
        columns, joins, sets = [], [], [f"\\set u :client_id % {identities} + 1"]
        for i, kind in enumerate(op.params, start=1):
            if kind == "conversation":
                sets.append(f"\\set k random(1, {SLOTS})")
                joins.append("JOIN devicelab_bench.convs v ON v.n = u.n AND v.k = :k")
                columns.append(f", v.conv AS p{i}")
            elif kind == "term":
                sets.append(f"\\set w random(1, {len(SEARCH_TERMS)})")
                joins.append("JOIN devicelab_bench.terms t ON t.n = :w")
                columns.append(f", t.term AS p{i}")
        identity = (
            IDENTITY_SQL.replace("%s", "u.claims")
            + "".join(columns)
            + f" FROM devicelab_bench.users u {' '.join(joins)} WHERE u.n = :u"
        )
        sql = op.sql
        for i in range(1, len(op.params) + 1):
            sql = sql.replace("%s", f":p{i}", 1)
        path = folder / f"{name}.sql"
        path.write_text("\n".join([*sets, identity + " \\gset", sql + ";", ""]))
        scripts.append((path, weight))
    return scripts


def run_pgbench(
    dsn: str, scripts: list[tuple[Path, int]], clients: int, seconds: int
) -> dict[str, float]:
    """pgbench's throughput (tps without the initial connection time) and mean latency."""
    cmd = [
        _pgbench(), "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds),
        *[f"-f{path}@{weight}" for path, weight in scripts], dsn,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300, check=False)
    text = out.stdout + out.stderr
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
    latency = re.search(r"latency average = ([\d.]+) ms", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    if out.returncode != 0 or not tps:
        raise ProbeFailed(
            f"pgbench failed ({out.returncode}): {(text.strip() or 'no output').splitlines()[-1]}",
            hint="run pgbench by hand against the same database to see its whole output",
            command=" ".join(cmd), stderr=text[-2000:],
        )  # fmt: skip
    return {
        "ops_per_s": float(tps.group(1)),
        "latency_mean_ms": float(latency.group(1)) if latency else float("nan"),
        "errors": float(failed.group(1)) if failed else 0.0,
    }


def run_ours(dsn: str, clients: int, seconds: int) -> dict[str, float]:
    """Our generator's throughput on the read mix, closed loop (ops/s over the window)."""
    run = run_load(dsn, LoadOptions(users=[clients], duration_s=seconds, mix="read", closed=True))
    step = run.steps[0]
    return {
        "ops_per_s": step.total.throughput_per_s,
        "latency_mean_ms": step.total.mean_ms,
        "p95_ms": step.total.p95_ms,
        "errors": float(step.total.errors),
        "processes": float(step.processes),
        "client_cpu_pct": step.cpu.client_mean_pct or 0.0,
        "db_cpu_pct": step.cpu.mean_pct or 0.0,
    }


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median across rounds (ops/s, mean ms, errors, ...): one summary row
    from the same statistic, whatever the number of rounds."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def judge(ratio: float) -> tuple[str, bool]:
    """The verdict words on ours/pgbench and whether it meets the goal (>= 0.5)."""
    met = ratio >= GOAL  # a NaN ratio (pgbench did nothing) misses
    return f"({_cli.verdict(met)} the goal >= {GOAL})", met


def main(argv: list[str] | None = None) -> int:
    """Run the bench; returns 0 when the goal is met, 1 when missed.

    Raises BadInput, ToolMissing, BackendUnavailable, ProbeFailed (exit 2/3 via _cli.run).
    """
    parser = _cli.parser("load", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn", type=_cli.dsn, help="PostgreSQL DSN (default: the managed cluster)"
    )
    parser.add_argument("--allow-writes", action="store_true", help="may write to --dsn")
    parser.add_argument("--users", type=_cli.positive_int, default=1000)
    parser.add_argument("--duration", type=_cli.positive_int, default=20, help="seconds per run")
    parser.add_argument(
        "--rounds", type=_cli.positive_int, default=2, help="alternating rounds (median)"
    )
    parser.add_argument(
        "--messages", type=_cli.positive_int, default=100_000, help="data when empty"
    )
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.dsn and not args.allow_writes:
        raise UnsafeActionRefused(
            "bench/load.py writes lookup tables (and data when empty) to --dsn",
            hint="add --allow-writes",
        )
    _pgbench()  # missing pgbench: say so before generating data
    with _cli.database_errors("the database server"):
        return _measure(args)


def _measure(args: Any) -> int:
    """The rounds and the printout of main; returns its exit code."""
    dsn = args.dsn
    if dsn is None:
        from backend_checks.managed import ManagedPostgres

        dsn = ManagedPostgres().ensure("devicelab_bench_load")
    identities = _prepare(dsn, args.users, args.messages, generate=True)
    ours_runs, theirs_runs = [], []
    try:
        with tempfile.TemporaryDirectory() as folder:
            scripts = pgbench_scripts(Path(folder), identities)
            for round_no in range(args.rounds):
                ours_runs.append(run_ours(dsn, args.users, args.duration))
                time.sleep(2)
                theirs_runs.append(run_pgbench(dsn, scripts, args.users, args.duration))
                time.sleep(2)
                mine, base = ours_runs[-1]["ops_per_s"], theirs_runs[-1]["ops_per_s"]
                print(
                    f"round {round_no + 1}: ours {mine:.1f} ops/s, pgbench {base:.1f} tps, "
                    f"ratio {mine / base if base else float('nan'):.2f}"
                )
    finally:
        with connect(dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS devicelab_bench CASCADE")
    ours = statistics.median(r["ops_per_s"] for r in ours_runs)
    theirs = statistics.median(r["ops_per_s"] for r in theirs_runs)
    ratio = ours / theirs if theirs else float("nan")
    per_round = [
        o["ops_per_s"] / t["ops_per_s"] for o, t in zip(ours_runs, theirs_runs, strict=True)
    ]
    print()
    # Every column is the median across rounds (as ops/s always was), not the last round's.
    print(f"read mix {mix_weights('read')}, {args.users} users, {args.duration} s, "
          f"{identities} identities, median of {args.rounds} round(s) in every column")  # fmt: skip
    print(f"{'generator':<28}{'ops/s':>10}{'mean ms':>10}{'errors':>8}")
    mine, base = medians(ours_runs), medians(theirs_runs)
    print(f"{'devicelab (Locust+psycopg)':<28}{ours:>10.1f}{mine['latency_mean_ms']:>10.1f}"
          f"{mine['errors']:>8g}")  # fmt: skip
    print(f"{'pgbench -M prepared':<28}{theirs:>10.1f}{base['latency_mean_ms']:>10.1f}"
          f"{base['errors']:>8g}")  # fmt: skip
    words, met = judge(ratio)
    print(
        f"ratio ours/pgbench = {ratio:.2f} {words}; per round "
        f"{', '.join(f'{r:.2f}' for r in per_round)}"
    )
    print(
        f"our load processes: {mine['processes']:g}, client CPU "
        f"{mine['client_cpu_pct']:.1f} %, DB CPU {mine['db_cpu_pct']:.1f} % of the machine "
        "(medians)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"ours": ours_runs, "pgbench": theirs_runs, "ratio": ratio, "per_round": per_round},
                indent=2,
            )
        )
    return _cli.exit_code([met])


if __name__ == "__main__":
    _cli.run("load", main)
