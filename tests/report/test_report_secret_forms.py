"""Secrets in the free text of reasons and evidence, in the forms they arrive in."""

from __future__ import annotations

from datetime import UTC, datetime

from devicelab.models import Check, Results, RunInfo
from devicelab.report import render_html, render_junit, render_markdown

SECRETS = ("QKEY1", "ATOK2", "sbp_BEARER3", "ENVPW5", "SRK6", "ENVPW9", "RTOK7")
REASON = (
    "GET https://x.supabase.co/rest/v1/m?apikey=QKEY1&access_token=ATOK2 answered 401;"
    " Authorization: Bearer sbp_BEARER3; PGPASSWORD=ENVPW5; service_role_key=SRK6;"
    " refresh_token='RTOK7'"
)


def _results(checks: list[Check]) -> Results:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    run = RunInfo(id="r", kind="backend", started_at=now, finished_at=now, devicelab_version="t")
    return Results(run=run, checks=checks)


def test_query_env_and_header_secrets_never_reach_a_report() -> None:
    # Masked as evidence keys, these words went through in free text: a Supabase error
    # quoting its URL's ?apikey=, a Bearer header, an environment line.
    evidence = {"env": ["PGPASSWORD=ENVPW9"], "note": "rows=5"}
    check = Check(
        id="signed_url", title="t", category="storage", status="error", reason=REASON,
        evidence=evidence,
    )  # fmt: skip
    results = _results([check])
    for render in (render_markdown, render_html, render_junit):
        text = render(results)
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, (render.__name__, leaked)
        assert "rows=5" in text  # a name that names no secret keeps its value


def test_a_run_of_no_checks_is_not_all_passed() -> None:
    for render in (render_markdown, render_html):
        text = render(_results([])).lower()
        assert "all checks passed" not in text and "no check ran" in text


def test_the_forms_a_first_version_of_the_name_value_mask_let_through() -> None:
    from devicelab.report._common import mask_secrets

    leaks = {
        'password="s3cret" and on': "s3cret",
        "connection failed: password='hunter2": "hunter2",
        "host=h password=pa;ss,w0rd end": "ss,w0rd",
        "--env=PGPASSWORD=hunter2": "hunter2",
        "headers=apikey=K1abc": "K1abc",
        "authorization: bearer sbp_0123456789": "sbp_0123456789",
        "SUPABASE_KEY=abc123 X-Api-Key=k9k9": "abc123",
    }
    for text, secret in leaks.items():
        assert secret not in mask_secrets(text), text
    # Words are no credentials: GoTrue's own 401 text stays readable.
    said = "This endpoint requires a Bearer token"
    assert mask_secrets(said) == said
