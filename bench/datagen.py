"""Benchmark of the data generator, side by side with its anchors on the same server.

    .venv/bin/python bench/datagen.py [--dsn DSN] [--sizes 100000,1000000] [--story 2000]
                                      [--repeat N] [--serial]

Rows: our generator at each size (messages/s and all rows/s: users, profiles,
conversations, messages, receipts, indexes built and analyzed), ``pgbench -i -s 10``
(1M pgbench_accounts rows, its own tables and keys), and the story's PL/pgSQL generator
(Task 1, row by row) timed at a small scale with 10K conversations and extrapolated
linearly to 100K messages (one ``ORDER BY random()`` over the conversations per message).
Linear was the low side on 2026-11-30 (1.18 ms per message over 1,000, 1.42 ms averaged
over a whole 100K run) and exact on 2026-12-03 (1.50 ms both ways, on a faster VM);
``--story 100000`` times the whole run (~2.5 minutes) and says "measured". Each runs in
its own scratch database on the server of ``--dsn`` (default: the managed cluster),
dropped afterwards.
``--repeat N`` runs our generator N times per size and reports the median (and the
spread); ``--serial`` forces its one-transaction path (the default builds on two
connections when it can).

Goals (issue 4): 1M messages in <= 15 s; >= 300x the story's generator at 100K.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import time
import uuid
from typing import Any

import _cli  # bench/_cli.py: this script's folder is on sys.path
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backend_checks.datagen import DatagenParams, generate, install_schema
from backend_checks.managed import ManagedPostgres, find_bindir
from devicelab.errors import ProbeFailed

STORY_SQL = """
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE OR REPLACE FUNCTION generate_test_users(p_count INTEGER)
RETURNS INTEGER AS $$
DECLARE v_user_id UUID; v_counter INTEGER := 0;
BEGIN
  FOR i IN 1..p_count LOOP
    v_user_id := uuid_generate_v4();
    INSERT INTO auth.users (id, email, encrypted_password, email_confirmed_at, created_at, updated_at)
    VALUES (v_user_id, 'testuser' || i || '@example.com', crypt('password123', gen_salt('bf')),
            NOW(), NOW(), NOW());
    INSERT INTO profiles (id, full_name, username, email)
    VALUES (v_user_id, 'Test User ' || i, 'testuser' || i, 'testuser' || i || '@example.com');
    v_counter := v_counter + 1;
  END LOOP;
  RETURN v_counter;
END; $$ LANGUAGE plpgsql SECURITY DEFINER;

CREATE OR REPLACE FUNCTION generate_test_conversations(p_count INTEGER)
RETURNS INTEGER AS $$
DECLARE v_conversation_id UUID; v_user1 UUID; v_user2 UUID; v_counter INTEGER := 0;
BEGIN
  FOR i IN 1..p_count LOOP
    v_conversation_id := uuid_generate_v4();
    SELECT id INTO v_user1 FROM profiles ORDER BY RANDOM() LIMIT 1;
    SELECT id INTO v_user2 FROM profiles WHERE id != v_user1 ORDER BY RANDOM() LIMIT 1;
    INSERT INTO conversations (id, type, participants, created_at, last_message_at)
    VALUES (v_conversation_id, 'direct', ARRAY[v_user1, v_user2],
            NOW() - (random() * INTERVAL '90 days'), NOW() - (random() * INTERVAL '7 days'));
    v_counter := v_counter + 1;
  END LOOP;
  RETURN v_counter;
END; $$ LANGUAGE plpgsql SECURITY DEFINER;

CREATE OR REPLACE FUNCTION generate_test_messages(p_count INTEGER)
RETURNS INTEGER AS $$
DECLARE v_message_id UUID; v_conversation RECORD; v_sender UUID; v_counter INTEGER := 0;
BEGIN
  FOR i IN 1..p_count LOOP
    SELECT id, participants INTO v_conversation FROM conversations ORDER BY RANDOM() LIMIT 1;
    v_sender := v_conversation.participants[1 + floor(random() * array_length(v_conversation.participants, 1))];
    v_message_id := uuid_generate_v4();
    INSERT INTO messages (id, conversation_id, sender_id, content, type, created_at)
    VALUES (v_message_id, v_conversation.id, v_sender,
            'Test message content ' || i || ' with some random text to simulate real messages',
            CASE floor(random() * 10) WHEN 0 THEN 'image' WHEN 1 THEN 'video' ELSE 'text' END,
            NOW() - (random() * INTERVAL '90 days'));
    v_counter := v_counter + 1;
    IF v_counter % 10000 = 0 THEN RAISE NOTICE 'Generated % messages...', v_counter; END IF;
  END LOOP;
  RETURN v_counter;
END; $$ LANGUAGE plpgsql SECURITY DEFINER;
"""  # noqa: E501 - the story's text, kept as written


#: Issue 4: "it takes about 3.3 ms per message with 10K conversations".
ISSUE_MS_PER_MESSAGE = 3.3
#: Issue 4's goals: 1M messages in <= 15 s; >= 300x the story's generator at 100K.
GOAL_1M_S = 15.0
GOAL_RATIO = 300.0


def story_basis(story_messages: int) -> str:
    """How the story's 100K figure was had: measured whole, or extrapolated from a run of
    ``story_messages``."""
    if story_messages == 100_000:
        return "measured"
    return f"extrapolated from {story_messages:,}"


def judge_1m(seconds: float) -> tuple[str, bool]:
    """The 1M-messages line and whether it meets the goal (<= 15 s)."""
    met = seconds <= GOAL_1M_S
    return f"1M messages: {seconds:.2f} s ({_cli.verdict(met)} the goal <= {GOAL_1M_S:g} s)", met


def judge_ratio(ratio: float) -> tuple[str, bool]:
    """The words on the same-run ratio to the story's generator at 100K, and whether it
    meets the goal (>= 300x)."""
    met = ratio >= GOAL_RATIO
    return f"{ratio:,.0f}x faster ({_cli.verdict(met)} the goal >= {GOAL_RATIO:g}x)", met


class Server:
    """Scratch databases on one server."""

    def __init__(self, dsn: str) -> None:
        self.base = conninfo_to_dict(dsn)

    def dsn(self, dbname: str) -> str:
        return make_conninfo(**{**self.base, "dbname": dbname})

    def create(self) -> str:
        """A new scratch database, and a CHECKPOINT so the run that follows does not pay
        for writing out the previous run's dirty pages."""
        name = f"dl_bench_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
                conn.execute("CHECKPOINT")
        except BaseException:  # Ctrl-C during the CHECKPOINT: the database exists already
            with contextlib.suppress(psycopg.Error):
                self.drop(name)
            raise
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ours(server: Server, messages: int, *, serial: bool = False) -> tuple[float, int, str]:
    """Seconds, total rows and path (parallel/serial) of our generator at ``messages``
    (defaults otherwise)."""
    name = server.create()
    try:
        with psycopg.connect(server.dsn(name)) as conn:
            report = generate(
                conn,
                DatagenParams(messages=messages),
                allow_writes=True,
                parallel=False if serial else None,
            )
        return report.seconds, sum(report.counts.values()), report.mode
    finally:
        server.drop(name)


def pgbench(server: Server, scale: int = 10) -> tuple[float, int]:
    """Seconds and rows of ``pgbench -i -s scale`` (its accounts table: 100K rows/scale)."""
    name = server.create()
    try:
        env = dict(os.environ)
        params = server.base
        if params.get("password"):
            env["PGPASSWORD"] = str(params["password"])
        cmd = [str(find_bindir() / "pgbench"), "-i", "-s", str(scale), "-q"]
        for flag, key in (("-h", "host"), ("-p", "port"), ("-U", "user")):
            if params.get(key):
                cmd += [flag, str(params[key])]
        cmd.append(name)
        if os.geteuid() == 0 and str(params.get("host", "")).startswith("/"):
            cmd = ["runuser", "-u", "postgres", "--", *cmd]  # the socket dir is postgres's
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise ProbeFailed(
                f"pgbench -i failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}",
                hint="check the server of --dsn (pgbench needs to create tables there)",
                command=" ".join(cmd), stderr=proc.stderr,
            )  # fmt: skip
        match = re.search(r"done in ([\d.]+) s", proc.stderr + proc.stdout)
        return (float(match.group(1)) if match else wall), 100_000 * scale
    finally:
        server.drop(name)


def story(server: Server, messages: int, conversations: int = 10_000) -> tuple[float, float]:
    """(seconds of its users + conversations steps, seconds per message) of the story's
    generator with 1,000 users and ``conversations`` conversations."""
    name = server.create()
    try:
        with psycopg.connect(server.dsn(name), autocommit=True) as conn:
            with conn.transaction():
                install_schema(conn)
            conn.execute(STORY_SQL)
            start = time.perf_counter()
            conn.execute("SELECT generate_test_users(1000)")
            conn.execute("SELECT generate_test_conversations(%s)", (conversations,))
            setup = time.perf_counter() - start
            conn.execute("ANALYZE")
            start = time.perf_counter()
            conn.execute("SELECT generate_test_messages(%s)", (messages,))
            return setup, (time.perf_counter() - start) / messages
    finally:
        server.drop(name)


def main(argv: list[str] | None = None) -> int:
    """Run the bench; returns 0 when every goal it judged is met, 1 when one is missed.

    Raises BadInput, ToolMissing, BackendUnavailable, ProbeFailed (exit 2/3 via _cli.run).
    """
    parser = _cli.parser("datagen", __doc__.splitlines()[0])
    parser.add_argument("--dsn", type=_cli.dsn, help="server to use (default: the managed cluster)")
    parser.add_argument("--sizes", type=_cli.positive_ints, default="100000,1000000")
    parser.add_argument(
        "--story", type=_cli.positive_int, default=2000, help="messages for the story's run"
    )
    parser.add_argument(
        "--repeat", type=_cli.positive_int, default=1, help="runs of ours per size (median)"
    )
    parser.add_argument("--serial", action="store_true", help="our one-transaction path only")
    args = parser.parse_args(argv)  # all of it checked before the cluster starts
    dsn = args.dsn or ManagedPostgres().ensure("postgres")
    with _cli.database_errors("the database server"):
        return _measure(Server(dsn), args)


def _measure(server: Server, args: Any) -> int:
    """The runs and the printout of main; returns its exit code."""
    rows: list[tuple[str, float, int, str]] = []
    results: dict[str, Any] = {}
    verdicts: list[bool] = []
    for size in args.sizes:
        runs = [ours(server, size, serial=args.serial) for _ in range(args.repeat)]
        times = sorted(r[0] for r in runs)
        seconds, total, mode = statistics.median(times), runs[0][1], runs[0][2]
        results[size] = seconds
        spread = (
            f", median of {len(times)}: {times[0]:.2f}-{times[-1]:.2f} s" if len(times) > 1 else ""
        )
        rows.append(
            (
                f"devicelab datagen {size:,} messages",
                seconds,
                total,
                f"{size / seconds:,.0f} messages/s ({mode}{spread})",
            )
        )
    seconds, total = pgbench(server)
    pg_rate = total / seconds
    rows.append(("pgbench -i -s 10", seconds, total, ""))
    setup, per_message = story(server, args.story)
    rows.append(("story generator: 1,000 users + 10,000 conversations", setup, 11_000, ""))
    label = f"story generator {args.story:,} messages (10K conversations)"
    note = f"{per_message * 1000:.2f} ms/message"
    rows.append((label, per_message * args.story, args.story, note))
    print(f"{'run':58} {'seconds':>9} {'rows':>11} {'rows/s':>11}  note")
    for label, secs, count, note in rows:
        print(f"{label:58} {secs:9.2f} {count:11,} {count / secs:11,.0f}  {note}")
    if 100_000 in results:
        extrapolated = per_message * 100_000
        ours_100k = results[100_000]
        words, met = judge_ratio(extrapolated / ours_100k)
        verdicts.append(met)
        print(
            f"\nstory generator, 100K messages ({story_basis(args.story)}): "
            f"{extrapolated:,.1f} s; ours "
            f"{ours_100k:.2f} s (users, conversations, messages, receipts, indexes, ANALYZE) "
            f"-> {words}"
        )
        print(
            f"story generator, its whole Phase 1 at 100K (users + conversations + messages): "
            f"{setup + extrapolated:,.1f} s -> {(setup + extrapolated) / ours_100k:,.0f}x"
        )
        # The issue's own figure for the anchor, measured elsewhere; the same-run ratio
        # above is the one that counts (this machine's speed cancels out of it).
        print(
            f"against the issue's stated anchor ({ISSUE_MS_PER_MESSAGE:g} ms/message, "
            f"{ISSUE_MS_PER_MESSAGE * 100:,.0f} s at 100K): "
            f"{ISSUE_MS_PER_MESSAGE * 100 / ours_100k:,.0f}x (not measured in this run)"
        )
    if 1_000_000 in results:
        line, met = judge_1m(results[1_000_000])
        verdicts.append(met)
        print(line)
    for size, secs in results.items():
        print(f"messages/s at {size:,} vs pgbench -i rows/s: {size / secs / pg_rate:.2f}x")
    return _cli.exit_code(verdicts)


if __name__ == "__main__":
    _cli.run("datagen", main)
