"""Server health checks that need no measuring window: sizes, bloat, slow and long-running
statements. Each returns a Check with a verdict and its evidence.

pg_stat_statements outliers are read across all roles (API traffic runs as
``authenticated``, not as the role devicelab connects with), and only statements called a
few times count: a one-off (a data load, an index build) is not an outlier. Nor are the
statements of devicelab's data generator, however often it ran: they touch its staging
schema, its ``_dl_`` helper tables or ``devicelab_meta``; nor those only devicelab's
checks send (the plan suite's EXPLAIN, the proofs' HypoPG calls and scratch copies). The
timings are cumulative: the reason says since when (a datagen resets its database's; see
:mod:`backend_checks.statement_history`). Sizes and bloat leave devicelab's scratch out
too (and temporary tables, other sessions' scratch).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from backend_checks.datagen import META_TABLE, STAGE_SCHEMA
from backend_checks.db import redact_sql
from backend_checks.nested_stats import HIDDEN_QUERY
from backend_checks.reasons import holds, judged_reason
from backend_checks.statement_history import statements_since
from backend_checks.stats_window import OWN_SCRATCH, SYSTEM_SCHEMAS
from devicelab.models import Check, CheckTarget
from devicelab.numbers import fmt_value
from devicelab.targets import backend_target

if TYPE_CHECKING:
    import psycopg

__all__ = ["bloat", "long_running", "slow_queries", "table_sizes", "vacuum"]

log = logging.getLogger(__name__)

#: Who may VACUUM a table up to PostgreSQL 16 (``vacuum_is_relation_owner``): the owner or a
#: role with its privileges (superusers too), or the database owner for a table that is not
#: shared. Anyone else gets a WARNING, not an error, and the table is left as it was.
_MAY_VACUUM = """(pg_has_role(c.relowner, 'USAGE')
    OR (NOT c.relisshared AND pg_has_role(
        (SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')))"""
#: From PostgreSQL 17 the MAINTAIN privilege (and pg_maintain) stands for the owner.
_MAY_VACUUM_17 = """(has_table_privilege(c.oid, 'MAINTAIN')
    OR (NOT c.relisshared AND pg_has_role(
        (SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')))"""


#: A statement of devicelab's data generator (a regular expression, case-insensitive): it
#: touches the staging schema, a ``_dl_`` helper table or the meta table, never the app's.
_OWN_STATEMENT = rf"{STAGE_SCHEMA}\.|\m{META_TABLE.rsplit('.', maxsplit=1)[-1]}\M|\m_dl_[a-z]"
#: A statement only devicelab's checks send, never the app: the plan suite's EXPLAIN
#: (ANALYZE ...) as the app role and as the owner (before PostgreSQL 18 the statement it
#: explains is recorded under the EXPLAIN's text too, toplevel = false), the proofs'
#: HypoPG calls, scratch copy (``devicelab_scratch``) and rolled-back probe indexes
#: (``devicelab_probe_<n>``), and the switching on of auto_explain for nested plans. Left
#: in, one check on a database missing an index left its plans "slow" for every later run.
_OWN_CHECK_STATEMENT = (
    r"^\s*EXPLAIN\M|\mhypopg|\mdevicelab_(scratch|probe_[0-9])|^\s*LOAD\s+'auto_explain'"
    r"|^\s*SET\s+(LOCAL\s+)?auto_explain\."
)


def _may_vacuum(conn: psycopg.Connection[Any]) -> str:
    """The SQL condition, on ``pg_class c``, that the current role may VACUUM ``c``."""
    return _MAY_VACUUM_17 if conn.info.server_version >= 170000 else _MAY_VACUUM


def table_sizes(conn: psycopg.Connection[Any]) -> Check:
    """Table, index and TOAST sizes of the user tables, judged by the table_sizes row of
    targets.yaml: their sum, as a share of the server's ``effective_cache_size`` (the
    memory it says caches data: shared_buffers and the OS page cache), must be <= 100 %.
    Data beyond it cannot all be in memory at once: as traffic reaches it, reads go to
    disk and the buffer hit ratio falls. devicelab's scratch (a datagen's staging schema,
    temporary tables) is not counted; a staging schema found is sized in the evidence
    (``stale_staging_bytes``) and the reason. Returns the Check; raises psycopg.Error."""
    target = backend_target("table_sizes")
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        rows = conn.execute(
            f"""SELECT n.nspname || '.' || c.relname, greatest(c.reltuples, 0)::int8,
                       pg_relation_size(c.oid), pg_indexes_size(c.oid),
                       pg_total_relation_size(c.oid)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN {SYSTEM_SCHEMAS}
                  AND NOT {OWN_SCRATCH}
                ORDER BY pg_total_relation_size(c.oid) DESC"""
        ).fetchall()
        staged = conn.execute(
            """SELECT count(*), sum(pg_total_relation_size(c.oid))::int8
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p') AND n.nspname = %s""",
            (STAGE_SCHEMA,),
        ).fetchone()
        settings = dict(
            conn.execute(
                """SELECT name, setting::int8 * pg_size_bytes(coalesce(unit, '1'))
                   FROM pg_settings WHERE name IN ('effective_cache_size', 'shared_buffers')"""
            ).fetchall()
        )
    tables = [
        {"table": r[0], "rows": r[1], "table_bytes": r[2], "index_bytes": r[3], "total_bytes": r[4]}
        for r in rows
    ]
    total = sum(t["total_bytes"] for t in tables)
    cache, buffers = settings["effective_cache_size"], settings["shared_buffers"]
    value = round(100.0 * total / cache, 3)
    ok = holds(value, target)
    said = (f"tables and indexes {total / 1e6:,.1f} MB = {{value}} of effective_cache_size "
            f"{cache / 1e6:,.0f} MB")  # fmt: skip
    why = "" if ok else ("the data outgrows the server's cache: more memory (and "
                         "effective_cache_size with it), or archive old messages")  # fmt: skip
    reason = judged_reason(said, value, "%", target, why)
    evidence: dict[str, Any] = {}
    if staged and staged[0]:
        # A datagen builds there and drops it when done; one killed leaves it behind (the
        # next datagen drops it). Either way it is not the app's data.
        evidence["stale_staging_bytes"] = staged[1] or 0
        evidence["stale_staging_tables"] = staged[0]
        reason += (
            f"; not counted: schema {STAGE_SCHEMA} ({(staged[1] or 0) / 1e6:,.1f} MB), "
            "a datagen's staging (running now, or left by one that was killed: the next "
            f"datagen drops it, or DROP SCHEMA {STAGE_SCHEMA} CASCADE)"
        )
    return Check(
        id="table_sizes",
        title="Table and index sizes",
        category="health",
        status="pass" if ok else "fail",
        value=value,
        unit="%",
        target=target,
        evidence={
            "total_bytes": total,
            "table_bytes": sum(t["table_bytes"] for t in tables),
            "index_bytes": sum(t["index_bytes"] for t in tables),
            "effective_cache_size_bytes": cache,
            "shared_buffers_bytes": buffers,
            "shared_buffers_pct": round(100.0 * total / buffers, 1),
            "tables_counted": len(tables),
            "tables": tables[:30],  # the biggest: the rest add little to read
        }
        | evidence,
        reason=reason,
    )


def bloat(
    conn: psycopg.Connection[Any], *, min_table_rows: int, max_dead_pct: float = 20.0
) -> Check:
    """A bloat estimate: dead tuples per table, and heap pages against the pages its live
    rows need (reltuples x average row width). Fails when a table of at least
    ``min_table_rows`` rows has more than ``max_dead_pct`` % dead tuples. The tables the
    connecting role may not VACUUM (the suite's closing VACUUM skips them) are named in
    the evidence (``vacuum_skipped``) and the reason. Returns the Check; raises
    psycopg.Error."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        rows = conn.execute(
            f"""SELECT t.schemaname || '.' || t.relname, t.n_live_tup, t.n_dead_tup,
                       c.relpages, greatest(c.reltuples, 0),
                       (SELECT sum(s.avg_width) FROM pg_stats s
                        WHERE s.schemaname = t.schemaname AND s.tablename = t.relname),
                       pg_get_userbyid(c.relowner), {_may_vacuum(conn)}, current_user
                FROM pg_stat_user_tables t JOIN pg_class c ON c.oid = t.relid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE t.schemaname NOT IN {SYSTEM_SCHEMAS} AND NOT {OWN_SCRATCH}
                ORDER BY t.n_live_tup + t.n_dead_tup DESC"""
        ).fetchall()
    tables, failing, skipped = [], [], []
    user = str(rows[0][-1]) if rows else ""
    for name, live, dead, pages, reltuples, width, owner, may, _user in rows:
        if not may:
            skipped.append({"table": name, "owner": owner})
        dead_pct = round(100.0 * dead / (live + dead), 2) if live + dead else 0.0
        expected = (float(reltuples) * (float(width or 0) + 28)) / 8192 if width else None
        extra = 100.0 * (pages - expected) / pages if expected and pages else None
        tables.append(
            {
                "table": name,
                "live": live,
                "dead": dead,
                "dead_pct": dead_pct,
                "pages": pages,
                "est_bloat_pct": None if extra is None else round(extra, 1),
            }
        )
        if live + dead >= min_table_rows and dead_pct > max_dead_pct:
            failing.append(f"{name} {dead_pct:.0f} % dead")
    judged = [t for t in tables if t["live"] + t["dead"] >= min_table_rows]
    worst = max((t["dead_pct"] for t in judged), default=0.0)
    target = CheckTarget(
        op="<=",
        value=max_dead_pct,
        unit="%",
        source="Performance Optimization Checklist: Check table bloat",
    )
    why = ("; ".join(failing) + ": VACUUM") if failing else ""
    said = f"worst dead tuples {{value}} (tables >= {min_table_rows:,} rows)"
    evidence: dict[str, Any] = {"tables": tables}
    reason = judged_reason(said, worst, "%", target, why)
    if skipped:
        # PostgreSQL only warns when VACUUM is refused, so a run as a role that reads the
        # tables without owning them would otherwise claim a cleanup that never happened.
        owners = sorted({str(t["owner"]) for t in skipped})
        evidence["vacuum_skipped"] = skipped
        evidence["vacuum_skipped_why"] = (
            f"{user} may not VACUUM them: only the owner ({', '.join(owners)}), a member of "
            "it, the database owner or a superuser may"
        )
        names = ", ".join(str(t["table"]) for t in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        # Said of every such table, written to by the suite or not: which ones its
        # rolled-back writes reach is not known here, only that none can be vacuumed.
        reason += (
            f"; not VACUUMed after the suite, {user} not being their owner: {names}{more} "
            "(what dead tuples the suite's rolled-back writes leave there, autovacuum removes)"
        )
    return Check(
        id="bloat",
        title="Table bloat (dead tuples)",
        category="health",
        status="fail" if failing else "pass",
        value=worst,
        unit="%",
        target=target,
        evidence=evidence,
        reason=reason,
    )


def vacuum(conn: psycopg.Connection[Any], tables: list[str], *, analyze: bool = False) -> list[str]:
    """VACUUM ``tables`` (``schema.name``) on ``conn``, with ANALYZE when ``analyze``;
    ``conn`` must be idle (VACUUM runs outside transactions; nothing is done inside one).
    Returns those actually vacuumed.
    A table the role may not vacuum (not its owner: checked first, and PostgreSQL's
    warning is watched for too, since it skips the table without an error) or a failure
    (the statement timeout on a huge table) is logged and left to autovacuum. Raises
    nothing for a table; psycopg.Error if the connection itself fails."""
    import psycopg
    from psycopg import sql

    done: list[str] = []
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        log.info("VACUUM %s skipped: the connection is inside a transaction", tables)
        return done
    warnings: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING" and diag.message_primary:
            warnings.append(diag.message_primary)

    was = conn.autocommit
    conn.autocommit = True
    conn.add_notice_handler(keep)
    try:
        allowed = {
            str(row[0])
            for row in conn.execute(
                f"""SELECT n.nspname || '.' || c.relname
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname || '.' || c.relname = ANY(%s) AND {_may_vacuum(conn)}""",
                (tables,),
            ).fetchall()
        }
        # Counts of this session not yet reported (the rows a datagen just deleted) would
        # land after VACUUM's own report and show as dead tuples it had removed.
        with contextlib.suppress(psycopg.Error):  # before PostgreSQL 15: no such call
            conn.execute("SELECT pg_stat_force_next_flush()")
        # Behind another VACUUM or an index build, give up soon: autovacuum will come.
        conn.execute("SET lock_timeout = '2s'")
        for name in tables:
            if name not in allowed:
                log.info("VACUUM %s skipped: the role is not its owner", name)
                continue
            schema, _, table = name.partition(".")
            warnings.clear()
            try:
                conn.execute(
                    sql.SQL("VACUUM (ANALYZE) {}" if analyze else "VACUUM {}").format(
                        sql.Identifier(schema, table)
                    )
                )
            except psycopg.Error as exc:
                log.warning("VACUUM %s failed: %s", name, exc)
                continue
            # A refusal names the table ("skipping \"t\" --- only table or database owner
            # can vacuum it"); other warnings (an old xmin) do not, and the table was done.
            refused = [w for w in warnings if f'"{table}"' in w]
            if refused:
                log.warning("VACUUM %s skipped: %s", name, refused[0])
                continue
            done.append(name)
    finally:
        conn.remove_notice_handler(keep)
        _restore(conn, autocommit=was)
    return done


def _restore(conn: psycopg.Connection[Any], *, autocommit: bool) -> None:
    """Put ``conn`` back as :func:`vacuum` found it. A Ctrl-C that lands between sending a
    statement and reading its answer leaves it ACTIVE, where nothing more can be sent and
    setting autocommit raises ProgrammingError (it replaced the interrupt: a traceback,
    exit 1): the statement is cancelled and the connection closed then, as it is when the
    connection is lost; the caller is unwinding either way. Raises nothing of psycopg's."""
    import psycopg
    from psycopg.pq import TransactionStatus

    status = conn.info.transaction_status
    if status in (TransactionStatus.ACTIVE, TransactionStatus.UNKNOWN):
        if status == TransactionStatus.ACTIVE:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=5)
        conn.close()
        return
    with contextlib.suppress(psycopg.Error):
        conn.execute("RESET lock_timeout")
    with contextlib.suppress(psycopg.Error):  # lost during the RESET: nothing to restore
        conn.autocommit = autocommit


def slow_queries(
    conn: psycopg.Connection[Any], *, mean_ms: float = 100.0, min_calls: int = 5
) -> Check:
    """pg_stat_statements outliers across all roles: statements called at least
    ``min_calls`` times with a mean above ``mean_ms`` (the story's 100 ms) fail. Other
    roles' statements whose text the role may not read are named with the grant that
    shows them. devicelab's own statements (its data generator's, :data:`_OWN_STATEMENT`,
    and those only its checks send, :data:`_OWN_CHECK_STATEMENT`) are left out, however
    often they ran, and counted in the evidence (``devicelab_statements_left_out``, by
    kind in ``devicelab_left_out``). The timings are cumulative: the evidence's
    ``stats_since`` and the reason say since when, when it can be read, and a failing
    reason names the reset that starts them afresh. Returns the Check (``skip`` without
    pg_stat_statements); raises nothing of pg_stat_statements' own."""
    import psycopg

    # <=: the story's query lists mean_exec_time > 100 as slow, not 100 itself.
    target = CheckTarget(
        op="<=",
        value=mean_ms,
        unit="ms",
        source="Performance Optimization Checklist: "
        "mean_exec_time > 100 -- queries slower than 100ms",
    )
    base = {
        "id": "slow_queries",
        "title": "Slow statements (pg_stat_statements, all roles)",
        "category": "health",
        "unit": "ms",
        "target": target,
    }
    ours = {
        "datagen": _OWN_STATEMENT,
        "checks": _OWN_CHECK_STATEMENT,
        "any": f"{_OWN_STATEMENT}|{_OWN_CHECK_STATEMENT}",
        "calls": min_calls,
        "ms": mean_ms,
    }
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            here = "s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            # coalesce: a text pg_stat_statements lost (NULL) is not known to be ours.
            rows = conn.execute(
                f"""SELECT r.rolname, s.calls, s.mean_exec_time, s.max_exec_time,
                          s.total_exec_time, left(s.query, 300), quote_ident(current_user)
                   FROM pg_stat_statements s LEFT JOIN pg_roles r ON r.oid = s.userid
                   WHERE {here} AND NOT coalesce(s.query ~* %(any)s, false)
                   ORDER BY s.mean_exec_time DESC LIMIT 50""",
                ours,
            ).fetchall()
            # A statement of both kinds (an EXPLAIN of devicelab_meta) counts as datagen's.
            counted = conn.execute(
                f"""SELECT count(*) FILTER (WHERE s.query ~* %(datagen)s),
                           count(*) FILTER (WHERE s.query ~* %(datagen)s AND slow),
                           count(*) FILTER (WHERE s.query !~* %(datagen)s),
                           count(*) FILTER (WHERE s.query !~* %(datagen)s AND slow)
                    FROM (SELECT s.query, s.calls >= %(calls)s AND s.mean_exec_time > %(ms)s
                          FROM pg_stat_statements s
                          WHERE {here} AND s.query ~* %(any)s) AS s (query, slow)""",
                ours,
            ).fetchone()
            since = statements_since(conn)
    except psycopg.Error as exc:
        return Check(
            **base,
            status="skip",
            reason=f"pg_stat_statements unavailable: {str(exc).strip().splitlines()[0]}",
        )
    top = [
        {
            "role": r[0],
            "calls": r[1],
            "mean_ms": round(r[2], 3),
            "max_ms": round(r[3], 3),
            "total_ms": round(r[4], 1),
            "query": redact_sql(r[5] or ""),
        }
        for r in rows
    ]
    outliers = [q for q in top if q["calls"] >= min_calls and q["mean_ms"] > mean_ms]
    value = max((q["mean_ms"] for q in top if q["calls"] >= min_calls), default=0.0)
    said_n = f"{len(outliers)} statement{'' if len(outliers) == 1 else 's'}"
    why = f"{said_n} with mean > {mean_ms:g} ms" if outliers else ""
    said = f"slowest mean {{value}} (statements called >= {min_calls} times, all roles)"
    evidence: dict[str, Any] = {"outliers": outliers, "top": top[:15], "min_calls": min_calls}
    reason = judged_reason(said, value, "ms", target, why)
    # Our own loads would otherwise become "outliers" from the fifth datagen on a reused
    # server (where datagen may not stop pg_stat_statements from recording them), and one
    # check's plans on a broken database would stay "slow" for every check after it.
    dg_all, dg_slow, ck_all, ck_slow = counted if counted else (0, 0, 0, 0)
    evidence["devicelab_statements_left_out"] = dg_all + ck_all
    evidence["devicelab_slow_statements_left_out"] = dg_slow + ck_slow
    evidence["devicelab_left_out"] = {
        "datagen": {"statements": dg_all, "slow": dg_slow},
        "checks": {"statements": ck_all, "slow": ck_slow},
    }
    if dg_slow:
        reason += (
            f"; {fmt_value(dg_slow, 'statements')} of devicelab's data generator "
            f"(mean > {mean_ms:g} ms) left out: a data load, not the app's"
        )
    if ck_slow:
        reason += (
            f"; {fmt_value(ck_slow, 'statements')} only devicelab's checks send (EXPLAIN "
            f"ANALYZE of the plan suite, index proofs; mean > {mean_ms:g} ms) left out: "
            "not the app's"
        )
    reported = {id(q): q for q in top[:15] + outliers}.values()
    hidden = sum(1 for q in reported if q["query"] == HIDDEN_QUERY)
    if hidden:
        user = str(rows[0][6])
        # The timings are there for every role; only the text is withheld, so the verdict
        # stands and the reader needs the grant that names the statements.
        grant = f"GRANT pg_read_all_stats TO {user}"
        evidence["hidden_statements"] = hidden
        evidence["hidden_fix"] = f"{grant} (Supabase: the postgres role has it)"
        reason += (
            f"; {fmt_value(hidden, 'statements')} of other roles show as {HIDDEN_QUERY}, "
            f"their text hidden from {user}: {grant} (Supabase: the postgres role has it)"
        )
    evidence["stats_since"] = since.at.isoformat() if since.at else None
    evidence["stats_since_by"] = since.by or None
    reason += since.said(failed=bool(outliers))
    return Check(
        **base,
        status="fail" if outliers else "pass",
        value=value,
        evidence=evidence,
        reason=reason,
    )


def long_running(conn: psycopg.Connection[Any], *, max_seconds: float = 300.0) -> Check:
    """Statements running (or transactions idle) for more than ``max_seconds`` in this
    database, other than ours."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        rows = conn.execute(
            """SELECT pid, usename, state, extract(epoch FROM now() - coalesce(query_start,
                      xact_start))::float8, left(query, 200)
               FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND backend_type = 'client backend' AND state <> 'idle'
                 AND now() - coalesce(query_start, xact_start) > make_interval(secs => %s)
               ORDER BY 4 DESC""",
            (max_seconds,),
        ).fetchall()
    found = [
        {
            "pid": r[0],
            "user": r[1],
            "state": r[2],
            "seconds": round(r[3], 1),
            "query": redact_sql(r[4] or ""),
        }
        for r in rows
    ]
    target = CheckTarget(
        op="==",
        value=0,
        unit="statements",
        source=f"devicelab: nothing running longer than {max_seconds:g} s",
    )
    said = f"{{value}} of other sessions busy > {max_seconds:g} s"
    return Check(
        id="long_running",
        title="Long-running statements",
        category="health",
        status="fail" if found else "pass",
        value=len(found),
        unit="statements",
        target=target,
        evidence={"running": found},
        reason=judged_reason(said, len(found), "statements", target),
    )
