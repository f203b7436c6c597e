"""Plan analysis on plans shaped like PostgreSQL's EXPLAIN (FORMAT JSON) output."""

from __future__ import annotations

import json

from backend_checks.plans import analyze_plan, nested_plans
from backend_checks.suggest import candidate, conjuncts

SEQ = {
    "Plan": {
        "Node Type": "Limit",
        "Total Cost": 2100.0,
        "Shared Hit Blocks": 180,
        "Shared Read Blocks": 20,
        "Plans": [
            {
                "Node Type": "Sort",
                "Sort Key": ["messages.created_at DESC"],
                "Plans": [
                    {
                        "Node Type": "Seq Scan",
                        "Relation Name": "messages",
                        "Alias": "messages",
                        "Filter": "(conversation_id = '6765'::uuid)",
                        "Actual Rows": 4000,
                        "Rows Removed by Filter": 16000,
                        "Actual Loops": 1,
                    }
                ],
            }
        ],
    },
    "Planning Time": 0.2,
    "Execution Time": 9.5,
}
LIMITED = {
    "Plan": {
        "Node Type": "Limit",
        "Plans": [
            {
                "Node Type": "Seq Scan",
                "Relation Name": "conversations",
                "Actual Rows": 1,
                "Rows Removed by Filter": 0,
                "Actual Loops": 1,
            }
        ],
    }
}
INDEXED = {
    "Plan": {
        "Node Type": "Nested Loop",
        "Plans": [
            {
                "Node Type": "Bitmap Heap Scan",
                "Relation Name": "conversations",
                "Plans": [
                    {
                        "Node Type": "Bitmap Index Scan",
                        "Index Name": "conversations_participants_idx",
                    }
                ],
            },
            {
                "Node Type": "Index Only Scan",
                "Index Name": "message_read_receipts_pkey",
                "Relation Name": "message_read_receipts",
            },
        ],
    }
}
ROWS = {"messages": 20000.0, "conversations": 1000.0, "public.messages": 20000.0}
PAGES = {"messages": 500.0, "conversations": 19.0}


def test_seq_scan_on_a_big_table_is_flagged_with_filter_and_sort() -> None:
    summary = analyze_plan([SEQ], ROWS)
    assert summary.planning_ms == 0.2 and summary.execution_ms == 9.5
    assert (summary.shared_hit, summary.shared_read) == (180, 20)
    [scan] = summary.flagged()
    assert scan.table == "messages" and scan.rows_examined == 20000
    assert scan.rows_returned == 4000  # what the filter kept: the planner_choice rule
    assert scan.sort_key == ["messages.created_at DESC"]
    assert candidate(scan, {"conversation_id", "created_at", "id"}) == (
        ["conversation_id", "created_at DESC"],
        "btree",
    )


def test_seq_scan_stopped_by_a_limit_or_on_a_small_table_is_not_flagged() -> None:
    summary = analyze_plan(LIMITED, ROWS)
    assert len(summary.seq_scans) == 1 and summary.flagged() == []
    small = analyze_plan(SEQ, {"messages": 500.0})
    assert small.flagged() == []
    # Without ANALYZE a scan reads the whole table, and what it keeps is unknown.
    estimated = json.loads(json.dumps(SEQ).replace('"Actual', '"Plan'))
    [scan] = analyze_plan(estimated, ROWS).seq_scans
    assert (scan.rows_examined, scan.rows_returned) == (20000, 0)


def test_indexes_are_listed_and_nothing_flagged() -> None:
    summary = analyze_plan(json.dumps([INDEXED]), ROWS)
    assert summary.indexes == ["conversations_participants_idx", "message_read_receipts_pkey"]
    assert summary.seq_scans == []


def test_gin_and_range_candidates() -> None:
    scan = analyze_plan(SEQ, ROWS).flagged()[0]
    gin = scan.model_copy(update={"filter": "(participants @> ARRAY[$1])", "sort_key": []})
    assert candidate(gin, {"participants"}) == (["participants"], "gin")
    ranged = scan.model_copy(
        update={"filter": "((conversation_id = $1) AND (created_at > $2))", "sort_key": []}
    )
    assert candidate(ranged, {"conversation_id", "created_at"}) == (
        ["conversation_id", "created_at"],
        "btree",
    )
    assert candidate(scan.model_copy(update={"filter": "(x = 1)", "sort_key": []}), {"y"}) is None


def test_no_candidate_from_an_or_term_or_after_a_computed_sort_key() -> None:
    # search_messages without its GIN: "conversation_id = $2" sits under an OR with
    # "$2 IS NULL", and the sort starts with ts_rank(...): a B-tree on (conversation_id,
    # created_at DESC), which already exists, would remove nothing.
    scan = (
        analyze_plan(SEQ, ROWS)
        .flagged()[0]
        .model_copy(
            update={
                "filter": "((deleted_at IS NULL) AND (($2 IS NULL) OR (conversation_id = $2)))",
                "sort_key": ["(ts_rank(m.search_vector, q.q)) DESC", "m.created_at DESC"],
            }
        )
    )
    assert candidate(scan, {"conversation_id", "created_at", "deleted_at"}) is None
    mixed = scan.model_copy(
        update={"filter": "((sender_id = $1) AND ((type = 'image') OR (type = 'video')))"}
    )
    assert candidate(mixed, {"sender_id", "type"}) == (["sender_id"], "btree")
    assert conjuncts("((content = 'a (b) OR c') AND (x = 1))") == [
        "content = 'a (b) OR c'",
        "x = 1",
    ]


def test_nested_plans_from_auto_explain_notices() -> None:
    inner = {
        "Query Text": "SELECT m.id FROM messages m WHERE m.conversation_id = $1",
        "Plan": SEQ["Plan"],
    }
    ri = {
        "Query Text": 'SELECT 1 FROM ONLY "public"."messages" x WHERE "id" = $1',
        "Plan": INDEXED["Plan"],
    }
    notices = [f"duration: 3.5 ms  plan:\n{json.dumps(p)}" for p in (inner, ri, inner)]
    notices.append("some other notice")
    [plan] = nested_plans(notices, ROWS)
    assert plan.duration_ms == 3.5
    assert plan.summary.flagged()[0].where.startswith("nested: SELECT m.id")


def test_a_table_of_few_pages_is_rightly_scanned_whole() -> None:
    # 1,000 conversations fit in 19 pages: the planner is right, nothing is flagged.
    whole = {
        "Plan": {
            "Node Type": "Seq Scan",
            "Relation Name": "conversations",
            "Actual Rows": 20,
            "Rows Removed by Filter": 980,
            "Actual Loops": 1,
        }
    }
    assert analyze_plan(whole, ROWS, table_pages=PAGES).flagged() == []
    assert analyze_plan(SEQ, ROWS, table_pages=PAGES).flagged() != []


def test_a_candidate_an_existing_index_leads_with_is_not_suggested() -> None:
    from backend_checks.health import IndexStats
    from backend_checks.suggest import Suggestion, _covered

    item = Suggestion(
        table="public.messages",
        columns=["conversation_id", "created_at DESC"],
        ddl="CREATE INDEX ON public.messages (conversation_id, created_at DESC)",
    )

    def index(table: str = "public.messages", **kw: object) -> IndexStats:
        fields: dict[str, object] = {"columns": ["conversation_id", "created_at"]} | kw
        return IndexStats(table=table, index="public.ix", idx_scan=0, **fields)  # type: ignore[arg-type]

    assert _covered(item, [index()])  # read backwards, it serves DESC too
    assert _covered(item, [index(columns=["conversation_id", "created_at", "id"])])
    assert not _covered(item, [index(columns=["conversation_id"])])
    assert not _covered(item, [index(method="gin")])
    assert not _covered(item, [index(partial=True)])
    assert not _covered(item, [index(valid=False)])  # a failed CREATE INDEX CONCURRENTLY
    assert not _covered(item, [index(table="public.conversations")])
