"""Unused indexes: ``pg_stat_user_indexes.idx_scan`` per index over the statistics' whole
life, judged only once they cover ``min_stats_days`` of traffic (see
:mod:`backend_checks.health`, whose docstring gives the exclusions and why), and INVALID
indexes, which no query can use whatever the window (a failed ``CREATE INDEX
CONCURRENTLY`` leaves one behind, still costing every write).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backend_checks.reasons import judged_reason
from backend_checks.stats_window import OWN_SCRATCH, SYSTEM_SCHEMAS
from devicelab.models import Check
from devicelab.numbers import fmt_value
from devicelab.targets import backend_target

if TYPE_CHECKING:
    import psycopg

__all__ = ["invalid_fix", "stats_window_start", "unused_indexes"]


def invalid_fix(index: str) -> str:
    """What to do about the INVALID index ``index`` (schema.name), in one phrase."""
    return f"REINDEX INDEX CONCURRENTLY {index} (or DROP INDEX CONCURRENTLY {index})"


def stats_window_start(conn: psycopg.Connection[Any]) -> datetime | None:
    """When this database's statistics began: the later of its last stats reset and our
    data load (devicelab_meta), or None when neither is known."""
    import psycopg

    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        row = conn.execute(
            "SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        starts = [row[0]] if row and row[0] else []
        try:
            with conn.transaction():
                meta = conn.execute(
                    "SELECT (value->>'generated_at')::timestamptz FROM public.devicelab_meta"
                    " WHERE key = 'datagen'"
                ).fetchone()
            if meta and meta[0]:
                starts.append(meta[0])
        except psycopg.Error:
            pass
    return max(starts) if starts else None


def _fk_columns(conn: psycopg.Connection[Any]) -> dict[int, list[list[int]]]:
    rows = conn.execute("SELECT conrelid::int8, conkey FROM pg_constraint WHERE contype = 'f'")
    found: dict[int, list[list[int]]] = {}
    for relid, conkey in rows.fetchall():
        found.setdefault(int(relid), []).append(sorted(conkey))
    return found


def unused_indexes(
    conn: psycopg.Connection[Any], *, min_stats_days: float = 7.0, window_start: datetime | None
) -> Check:
    """Indexes never scanned (see the module docstring for exclusions and fairness).

    ``window_start`` is when the statistics began (stats reset or our data load); None when
    unknown (then nothing is called unused: the check is skipped, as for a short window).
    """
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        fks = _fk_columns(conn)
        rows = conn.execute(
            f"""SELECT s.schemaname || '.' || s.relname, s.indexrelname, s.idx_scan,
                       i.indisprimary, i.indisunique, i.indisreplident, i.indkey::text,
                       i.indrelid::int8, pg_relation_size(s.indexrelid), i.indisvalid
                FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
                JOIN pg_class c ON c.oid = s.relid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE s.schemaname NOT IN {SYSTEM_SCHEMAS}
                  AND s.schemaname NOT IN ('auth', 'storage', 'realtime', 'extensions')
                  AND NOT {OWN_SCRATCH}  -- a data load of ours in progress, or left behind
                ORDER BY 1, 2"""
        ).fetchall()
    candidates, excluded, invalid = [], [], []
    for table, index, scans, primary, unique, replident, indkey, relid, size, valid in rows:
        if not valid:  # whatever else it is: no query can use it until it is rebuilt
            schema = table.split(".", 1)[0]
            invalid.append({"table": table, "index": index, "bytes": size,
                            "fix": invalid_fix(f"{schema}.{index}")})  # fmt: skip
        keys = [int(k) for k in indkey.split()]
        why = (
            "primary key"
            if primary
            else "unique"
            if unique
            else "replica identity"
            if replident
            else None
        )
        if why is None and any(sorted(keys[: len(fk)]) == fk for fk in fks.get(relid, [])):
            why = "supports a foreign key"
        entry = {"table": table, "index": index, "idx_scan": scans, "bytes": size}
        if why:
            excluded.append({**entry, "why": why})
        elif scans == 0:
            candidates.append(entry)
    age_days = None
    if window_start is not None:
        age_days = (datetime.now(UTC) - window_start).total_seconds() / 86400
    evidence = {
        "unused": candidates,
        "excluded": excluded,
        "invalid": invalid,
        "stats_age_days": age_days,
        "min_stats_days": min_stats_days,
    }
    target = backend_target("unused_indexes")
    base = {
        "id": "unused_indexes",
        "title": "Unused indexes",
        "category": "index",
        "unit": "indexes",
        "target": target,
        "evidence": evidence,
    }
    said = ("{value} never scanned (primary, unique, replica-identity and foreign-key "
            "indexes excluded)")  # fmt: skip
    # Named in every verdict, the window aside: an INVALID index is unused by construction.
    broken = "; ".join(
        f"{i['index']} is INVALID (no query can use it): {i['fix']}" for i in invalid
    )
    # Unknown is not old enough: a database restored minutes ago (never reset, no data
    # load of ours) had its critical indexes called unused after seconds of traffic.
    if age_days is None or age_days < min_stats_days:
        covered = (
            "when they began is unknown (no stats reset on record, no devicelab data load;"
            " a superuser's SELECT pg_stat_reset() starts a window)"
            if age_days is None
            else f"cover {age_days * 24:.1f} h"
        )
        return Check(
            **base,
            status="skip",
            value=len(candidates),
            reason=said.replace("{value}", fmt_value(len(candidates), "indexes"))
            + f", not judged: statistics {covered}, not the "
            f"{min_stats_days:g} days of real traffic needed to call an index unused"
            + (f"; {broken}" if broken else ""),
        )
    why = "; ".join(filter(None, [", ".join(c["index"] for c in candidates), broken]))
    return Check(
        **base,
        status="fail" if candidates else "pass",
        value=len(candidates),
        reason=judged_reason(said, len(candidates), "indexes", target, why),
    )
