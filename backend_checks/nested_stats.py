"""The statements inside a function as pg_stat_statements saw them (``toplevel =
false``): timings and buffers, no plans. The stand-in for auto_explain's plans when the
connecting role may not switch auto_explain on (``backend_checks.suite``), and, when it
finds nothing, the reason in words with the fix (the extension missing, statements inside
functions not tracked, or their text hidden from a role without pg_read_all_stats).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devicelab.errors import first_line
from devicelab.numbers import fmt_value

if TYPE_CHECKING:
    import psycopg

__all__ = ["HIDDEN_QUERY", "statements_inside"]

#: What pg_stat_statements shows for another role's statement without pg_read_all_stats.
HIDDEN_QUERY = "<insufficient privilege>"


def statements_inside(
    conn: psycopg.Connection[Any], function: str, role: str
) -> tuple[list[dict[str, Any]], str]:
    """pg_stat_statements rows (toplevel = false) whose text appears in ``function``'s
    body, and, when there are none, why and what would show them to ``role`` (quoted).
    Raises nothing: pg_stat_statements missing or unreadable is the second value."""
    import psycopg

    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            body_row = conn.execute(
                "SELECT string_agg(prosrc, ' ') FROM pg_proc WHERE proname = %s", (function,)
            ).fetchone()
            body = " ".join(str(body_row[0] if body_row and body_row[0] else "").split()).lower()
            rows = conn.execute(
                """SELECT query, calls, mean_exec_time, shared_blks_hit, shared_blks_read
                   FROM pg_stat_statements WHERE toplevel = false
                   ORDER BY total_exec_time DESC LIMIT 200"""
            ).fetchall()
            track = conn.execute(
                "SELECT current_setting('pg_stat_statements.track', true)"
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return [], (
            "pg_stat_statements is not installed in this database: CREATE EXTENSION "
            "pg_stat_statements (with pg_stat_statements in shared_preload_libraries and "
            "pg_stat_statements.track = all)"
        )
    except psycopg.Error as exc:
        return [], f"pg_stat_statements unreadable: {first_line(exc)}"
    found = []
    hidden = 0
    for query, calls, mean, hit, read in rows:
        # Without pg_read_all_stats another role's text is withheld; the function's
        # statements run as the app role, not as the role we connect with.
        hidden += query == HIDDEN_QUERY
        head = " ".join(str(query).split()).lower()[:40]
        if head and head in body:
            found.append(
                {
                    "query": query,
                    "calls": calls,
                    "mean_ms": round(mean, 3),
                    "hit": hit,
                    "read": read,
                }
            )
    if found:
        return found, ""
    if hidden:
        return [], (
            f"pg_stat_statements hides the text of {fmt_value(hidden, 'statements')} inside "
            f"functions run by other roles ({HIDDEN_QUERY}): GRANT pg_read_all_stats TO {role}"
        )
    if track and track[0] != "all":
        return [], (
            f"pg_stat_statements.track = {track[0]} does not record statements inside "
            "functions: set it to all"
        )
    return [], f"pg_stat_statements holds no statement of {function}"
