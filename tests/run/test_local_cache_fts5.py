"""The FTS5 branch of the app's local cache, on a SQLite that has FTS5 (Python's).

The app's web SQLite (jeep-sqlite's sql.js) has no FTS5, so the browser tests only reach
the LIKE branch; a phone's SQLite takes the FTS5 one. This runs that branch's own SQL, read
from the probe's source (capacitor-harness/probe/src/probes/cache.ts), on a real SQLite.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "capacitor-harness/probe/src/probes/cache.ts"


def sql(name: str) -> str:
    """The SQL template constant ``name`` of cache.ts (a backtick string, no ${})."""
    found = re.search(rf"^const {name} = `(.*?)`", SOURCE.read_text(), re.S | re.M)
    assert found is not None and "${" not in found.group(1), name
    return found.group(1).replace("\\\\", "\\")


@pytest.fixture
def db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE probe USING fts5(c)")
    except sqlite3.OperationalError:
        pytest.skip(f"this Python's SQLite {sqlite3.sqlite_version} has no FTS5")
    conn.executescript(sql("SCHEMA"))
    conn.execute(sql("FTS5"))
    rows = [(f"m{i:02d}", "c1", "a", f"lunch at {i}" if i % 2 else f"work item {i}", "text",
             f"2025-12-01T10:00:{i:02d}.000000Z") for i in range(60)]  # fmt: skip
    conn.executemany("INSERT INTO local_messages (id, conversation_id, sender_id, content, type,"
                     " created_at) VALUES (?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
    conn.execute("INSERT INTO local_messages_fts(local_messages_fts) VALUES('rebuild')")
    return conn


def test_fts5_search_finds_words_newest_first_through_the_index(db: sqlite3.Connection) -> None:
    search = sql("SEARCH_FTS5")
    found = db.execute(search, ('"lunch"', 50)).fetchall()
    assert [r[0] for r in found] == [f"m{i:02d}" for i in range(59, 0, -2)]
    assert len(db.execute(search, ('"lunch" "at"', 50)).fetchall()) == 30
    assert db.execute(search, ('"zzqxnotaword"', 50)).fetchall() == []
    plan = [r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {search}", ('"lunch"', 50))]
    assert any("VIRTUAL TABLE" in p for p in plan), plan


def test_query_50_and_the_conversation_list_use_their_indexes(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO local_conversations VALUES ('c1', 'direct', NULL, '[]', "
               "'2025-12-01T00:00:00.000000Z', '2025-12-01T10:00:59.000000Z')")  # fmt: skip
    newest = db.execute(sql("QUERY_50"), ("c1", 50)).fetchall()
    assert [r[0] for r in newest] == [f"m{i:02d}" for i in range(59, 9, -1)]
    listed = db.execute(sql("CONVERSATIONS"), (50,)).fetchall()
    assert [(r[0], r[4]) for r in listed] == [("c1", "m59")]
    plan = [r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql('QUERY_50')}", ("c1", 50))]
    assert any("idx_local_messages_conversation_created" in p for p in plan), plan
