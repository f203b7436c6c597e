"""The journal is compacted when it holds many settled lines: rewritten without them,
atomically, under its lock, never losing a pending change, even while other processes
record and undo changes in it at the same time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from devicelab.journal import COMPACT_AT, Journal

_WORKER = """
import sys
from devicelab.journal import Journal
path, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
journal = Journal(path)
for i in range(rounds):
    entry = journal.record("test.change", f"{name}-{i}", {"what": f"change {i}"})
    if i % 7 == 3:
        print(entry.id, flush=True)  # left pending
    else:
        journal.mark_undone(entry)
    if i % 5 == 0:
        journal.pending()  # reads, and compacts when enough is settled
"""


def test_settled_lines_are_dropped_and_pending_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    kept = []
    for i in range(COMPACT_AT):
        entry = journal.record("test.change", "SERIAL1", {"what": f"change {i}"})
        if i in (0, 10, COMPACT_AT - 1):
            kept.append(entry)
        else:
            journal.mark_undone(entry)
    with path.open("ab") as handle:
        handle.write(b'{"op": "change", "torn')  # a crash mid-line: left for a human
    before = path.stat().st_ino
    assert Journal(path).pending() == kept
    lines = path.read_bytes().splitlines()
    assert len(lines) == len(kept) + 1, lines
    assert [json.loads(line)["id"] for line in lines[:3]] == [e.id for e in kept]
    assert lines[-1] == b'{"op": "change", "torn'
    assert path.stat().st_ino != before  # a new file renamed over the old one
    assert not (tmp_path / "journal.jsonl.compact").exists()
    # The compacted journal reads the same and takes new lines after the torn one.
    journal.mark_undone(kept[0])
    assert Journal(path).pending() == kept[1:]


def test_few_settled_lines_leave_the_file_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    for _ in range(3):
        journal.mark_undone(journal.record("test.change", "SERIAL1"))
    before = path.read_bytes()
    assert journal.pending() == []
    assert path.read_bytes() == before


def test_concurrent_writers_lose_no_pending_change_to_a_compaction(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    rounds = COMPACT_AT  # each worker settles enough for several compactions
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), f"w{n}", str(rounds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    expected: set[str] = set()
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        expected.update(out.split())
    pending = {entry.id for entry in Journal(path).pending()}
    assert pending == expected
    assert len(expected) == 4 * len([i for i in range(rounds) if i % 7 == 3])
    assert len(path.read_bytes().splitlines()) < 4 * rounds  # it was compacted
