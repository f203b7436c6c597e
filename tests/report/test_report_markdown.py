"""The Markdown report: the story matrix cell by cell, every check, masked evidence."""

from __future__ import annotations

import re
from typing import Any

from devicelab.models import Results, TargetBook
from devicelab.report import render_markdown
from devicelab.targets import STORY_MATRIX


def matrix_table(md: str) -> list[list[str]]:
    """The rows of the story matrix (header first), cells split on unescaped pipes."""
    section = md.split("## Story targets", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            rows.append([c.strip() for c in cells])
    return rows


def check_section(md: str, check_id: str) -> str:
    match = re.search(rf"^### \S+ {check_id} — .*?(?=^### |^## |\Z)", md, re.M | re.S)
    assert match, f"no section for {check_id}"
    return match.group(0)


def test_matrix_has_the_story_rows_and_columns_with_verdicts_in_the_4g_column(
    results: Results, book: TargetBook
) -> None:
    table = matrix_table(render_markdown(results, book))
    header, rows = table[0], table[1:]
    assert header == [
        "Metric",
        "Web (Desktop)",
        "iOS/Android (WiFi)",
        "**iOS/Android (4G)** (this run)",
    ]
    assert [r[0].split(" (`")[0] for r in rows] == [title for _, title in STORY_MATRIX]
    cells = {r[0].split("`")[1]: r[1:] for r in rows}
    assert cells["message_delivery"] == ["< 100 ms", "< 300 ms", "< 500 ms · ✅ 250.6 ms"]
    assert cells["conversation_list_load"][2] == "< 200 ms · ❌ 290.5 ms"
    assert cells["image_upload_1mb"][2] == "< 3 s · ⚠ error"
    assert cells["local_cache_query_50"] == ["N/A", "< 50 ms", "< 50 ms · ⏭ skipped"]
    assert cells["battery_drain"] == ["N/A", "< 10 %/h", "< 10 %/h · ✅ 7.6 %/h"]
    assert cells["memory_100_conversations"][0] == "< 100 MB"
    for not_run in ("message_search", "image_download_1mb", "reconnect"):
        assert cells[not_run][2].endswith("· not run"), cells[not_run]
    # Only the judged column carries verdicts.
    for row in rows:
        for text in row[1:3]:
            assert not re.search("[✅❌⏭⚠]|not run", text), row


def test_judged_column_follows_the_network_when_checks_name_no_column(
    raw: dict[str, Any], book: TargetBook
) -> None:
    raw["run"]["device"] = {"id": "web", "platform": "web", "model": "Chromium", "os": "Linux"}
    raw["run"]["network"] = {"name": "none"}
    for check in raw["checks"]:
        if check.get("target"):
            check["target"]["column"] = None
    table = matrix_table(render_markdown(Results.model_validate(raw), book))
    assert table[0][1] == "**Web (Desktop)** (this run)"
    delivery = next(r for r in table if "message_delivery" in r[0])
    assert delivery[1] == "< 100 ms · ✅ 250.6 ms"
    assert delivery[2] == "< 300 ms"


def test_a_3g_run_gets_the_3g_column(raw: dict[str, Any], book: TargetBook) -> None:
    raw["run"]["network"] = {"name": "slow-3g"}
    raw["checks"] = [c for c in raw["checks"] if not c.get("target")]
    table = matrix_table(render_markdown(Results.model_validate(raw), book))
    assert table[0][-1] == "**Mobile (3G)** (this run)"
    assert all(len(row) == 5 for row in table)


def test_backend_run_and_missing_book_say_why_cells_are_empty(raw: dict[str, Any]) -> None:
    raw["run"].update(kind="backend", device=None, network=None)
    md = render_markdown(Results.model_validate(raw))
    assert "A backend run" in md and "No targets.yaml was given" in md
    for row in matrix_table(md)[1:]:
        assert row[1:] == ["—", "—", "—"], row


def test_every_check_shows_value_target_row_reason_and_evidence(
    results: Results, book: TargetBook
) -> None:
    md = render_markdown(results, book)
    assert md.startswith("# devicelab report — device run · device pixel-7 (android")
    assert "network 4g" in md.splitlines()[0] and "backend supabase" in md.splitlines()[0]
    assert "**6 checks: 3 ✅ pass · 1 ❌ fail · 1 ⏭ skip · 1 ⚠ error**" in md
    for check in results.checks:
        section = check_section(md, check.id)
        assert f"| reason | `{check.reason}` |" in section or check.reason in section
        if check.target is not None:
            assert f"| target row | `{check.target.source}` (column `4g`) |" in section
    failed = check_section(md, "conversation_list_load")
    assert "| value | p95 290.5 ms vs target < 200 ms |" in failed
    assert "| samples | 30: min 122.7 ms, p50 237.3 ms, p95 290.5 ms" in failed
    # Evidence: key: value lines, a record list as a table, deep data as fenced JSON,
    # long lists cut with a count.
    assert "- `conversations`: `50`" in failed
    assert "| `run` | `ms` |" in failed and "| `26` | `339.8` |" in failed
    assert '```json\n{\n  "nodes": [' in failed
    assert "tr-019] … (+25 more)" in failed and "tr-020" not in failed
    assert "| `offset_ms` | `3.2` |" in check_section(md, "message_delivery")
    assert "*No evidence recorded.*" in check_section(md, "local_cache_query_50")


def test_run_text_stays_inert(results: Results) -> None:
    md = render_markdown(results)
    note = next(line for line in md.splitlines() if line.startswith("- `note`:"))
    # A code span fenced by more backticks than the text holds: no HTML, no formatting.
    assert note == "- `note`: ``<script>alert('x')</script> | pipe ` backtick \ufffd control``"
    assert "\x01" not in md


def test_secrets_are_masked(results: Results) -> None:
    md = render_markdown(results)
    for secret in ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", "hunter2", "Bearer"):
        assert secret not in md
    assert "- `anon_key`: `***`" in md and "- `authorization`: `***`" in md
    assert "postgresql://postgres:***@127.0.0.1:54322/postgres" in md


def test_keys_of_a_plan_are_shown_and_keys_of_an_api_are_masked(
    results: Results, raw: dict[str, Any]
) -> None:
    # A flagged scan's sort_key is why a suggestion ends in DESC: it was printed as ***.
    raw["checks"][0]["evidence"] = {
        "flagged": [{"table": "messages", "sort_key": ["m.created_at DESC"]}],
        "plan": {"Node Type": "Sort", "Sort Key": ["created_at DESC"], "Hash Key": "x"},
        "service_role_key": "s3cr3t-a",
        "key": "s3cr3t-b",
        "primary_key_secret": "s3cr3t-c",
    }
    md = render_markdown(Results.model_validate(raw))
    assert "m.created_at DESC" in md and '"Sort Key": [' in md and '"Hash Key": "x"' in md
    assert "s3cr3t" not in md


def test_a_url_password_with_an_unescaped_at_is_masked_whole(
    results: Results, raw: dict[str, Any]
) -> None:
    raw["checks"][0]["evidence"] = {"dsn": "see postgresql://bob:xq@zv9@db.example:5432/app"}
    md = render_markdown(Results.model_validate(raw))
    assert "zv9" not in md and "postgresql://bob:***@db.example:5432/app" in md


def test_series_table_and_empty_run(results: Results, raw: dict[str, Any]) -> None:
    md = render_markdown(results)
    assert "| `memory` | MB | 121 | 37.4 MB | 45 MB | 3600 s |" in md
    raw["checks"], raw["series"] = [], []
    empty = render_markdown(Results.model_validate(raw))
    assert "*This run recorded no checks.*" in empty and "## Series" not in empty


def _with_suggestions(raw: dict[str, Any]) -> Results:
    """A backend run whose seq_scans and index_usage checks report index suggestions."""
    raw["run"].update(kind="backend", device=None, network=None)
    btree = {
        "ddl": "CREATE INDEX ON public.messages (conversation_id, created_at DESC)",
        "proven": True,
        "proof": "HypoPG on message_fetch: planner cost 975 -> 345",
        "queries": ["message_fetch", "unread_count"],
    }
    gin = {
        "ddl": "CREATE INDEX ON public.conversations USING gin (participants)",
        "proven": False,
        "proof": "unproven: the scratch copy failed (permission denied)",
        "queries": [],
    }
    raw["checks"][0]["evidence"] = {"suggestions": [gin, btree]}
    raw["checks"][1]["evidence"] = {"suggestions": [btree]}
    return Results.model_validate(raw)


def test_recommended_indexes_come_first_once_each_proven_first(raw: dict[str, Any]) -> None:
    raw["checks"][0]["status"] = raw["checks"][1]["status"] = "fail"
    first, second = raw["checks"][0]["id"], raw["checks"][1]["id"]
    md = render_markdown(_with_suggestions(raw))
    section = md.split("## Recommended indexes", 1)[1].split("\n## ", 1)[0]
    assert md.index("## Recommended indexes") < md.index("## Run")
    rows = [line for line in section.splitlines() if line.startswith("| `CREATE")]
    assert len(rows) == 2
    assert "(conversation_id, created_at DESC)" in rows[0]
    assert "✅ proven: `HypoPG on message_fetch" in rows[0]
    assert "`message_fetch`, `unread_count`" in rows[0] and f"{first}, {second}" in rows[0]
    assert "gin (participants)" in rows[1] and "unproven: `the scratch copy failed" in rows[1]
    assert "unproven: unproven" not in rows[1]


def test_a_suggestion_is_reported_by_the_checks_that_did_not_pass(raw: dict[str, Any]) -> None:
    # Every backend check's evidence carries all suggestions: a passing seq_scans was
    # named among those that "reported" a missing unique index.
    raw["checks"][0]["status"], raw["checks"][1]["status"] = "pass", "fail"
    first, second = raw["checks"][0]["id"], raw["checks"][1]["id"]
    md = render_markdown(_with_suggestions(raw))
    section = md.split("## Recommended indexes", 1)[1].split("\n## ", 1)[0]
    [btree] = [line for line in section.splitlines() if "created_at DESC" in line]
    assert btree.rstrip(" |").endswith(second) and first not in btree.split("|")[-2]


def test_no_recommendations_section_without_suggestions(results: Results) -> None:
    assert "Recommended indexes" not in render_markdown(results)


def test_every_dsn_form_and_a_titles_secret_stay_out_of_every_report(
    raw: dict[str, Any],
) -> None:
    # key=value and ?password= DSNs were printed in clear, and titles were never masked.
    from devicelab.report import render_html, render_junit

    check = raw["checks"][0]
    check["status"] = "fail"
    check["title"] = "list via postgres://u:Hunter2SecretC@h/d"
    check["reason"] = "host=db user=u password=Hunter2SecretB dbname=x"
    check["evidence"] = {
        "conninfo": "host=h password='Hunter2 SecretE' port=5432",
        "uri_q": "postgresql://u@h/d?sslmode=require&password=Hunter2SecretJ",
    }
    results = Results.model_validate(raw)
    for text in (render_markdown(results), render_html(results), render_junit(results)):
        assert "Hunter2" not in text and "SecretE" not in text
    assert "password=***" in render_markdown(results)


def test_a_title_is_plain_text_in_its_heading(raw: dict[str, Any]) -> None:
    # A title was raw Markdown in the heading: an <img> a viewer would fetch, a link.
    raw["checks"][0]["title"] = "<img src=https://evil.example/x.png> [see](http://e.example)"
    md = render_markdown(Results.model_validate(raw))
    heading = next(line for line in md.splitlines() if line.startswith("### "))
    assert not re.search(r"(?<!\\)[<\[\]]", heading) and "://" not in heading
    assert r"\<img src=https\[:\]//evil.example/x.png\>" in heading


def test_a_check_judged_against_nothing_shows_no_target_in_the_matrix(
    raw: dict[str, Any], book: TargetBook
) -> None:
    # The judged cell showed the column's row (another platform's) beside a check whose
    # results.json says target null: "< 50 MB · ✅ 0.065 MB" on a web run at 3G.
    check = next(c for c in raw["checks"] if c["id"] == "message_delivery")
    check.update(target=None, status="skip", reason="the story sets no target here")
    table = matrix_table(render_markdown(Results.model_validate(raw), book))
    row = next(r for r in table if "`message_delivery`" in r[0])
    assert row[3].startswith("— · ")
