"""The reports' second fence masks passwords in the forms a results.json from elsewhere
may carry them: SQL literals in any quoting, a dict's repr, ``name: value``, and
Supabase's secret keys."""

from __future__ import annotations

from datetime import UTC, datetime

from devicelab.models import Check, Results, RunInfo
from devicelab.report import render_html, render_junit, render_markdown
from devicelab.report._common import mask_secrets
from tests.linear_time import assert_linear

TEXTS = {
    "ALTER ROLE r PASSWORD E'EscPw_111'": "EscPw_111",
    "ALTER ROLE r PASSWORD $$DolPw_222$$ LOGIN": "DolPw_222",
    "ALTER ROLE r PASSWORD $t$TagPw_223$t$": "TagPw_223",
    "ALTER ROLE r PASSWORD'NoSpPw_333'": "NoSpPw_333",
    "{'user': 'u', 'password': 'DictPw_444'}": "DictPw_444",
    "password: YamlPw_555": "YamlPw_555",
    "SUPABASE_KEY is sb_secret_SbSec_666abc": "SbSec_666abc",
}


def test_every_form_is_masked_in_every_report() -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    run = RunInfo(id="r", kind="backend", started_at=now, finished_at=now, devicelab_version="t")
    checks = [
        Check(
            id="slow_queries",
            title="t",
            category="health",
            status="fail",
            reason=" ; ".join(TEXTS),
            evidence={"top": [{"query": text} for text in TEXTS], "pub": "sb_publishable_Pub1"},
        )
    ]
    for render in (render_markdown, render_html, render_junit):
        text = render(Results(run=run, checks=checks))
        leaked = [secret for secret in TEXTS.values() if secret in text]
        assert not leaked, (render.__name__, leaked)
        assert "sb_publishable_Pub1" in text  # a publishable key is meant to be public


def test_text_without_a_secret_is_kept() -> None:
    for text in ("SELECT 'password' AS kind, $1", "hint: run it", "tokens: 5"):
        assert mask_secrets(text) == text


def test_masking_adversarial_text_grows_linearly() -> None:
    for piece, count in (
        ("password '", 12_500),
        ("password E'\\", 12_500),
        ("password $a", 12_500),
        ("'password':", 12_500),
        ("password:'", 12_500),
        ("a: ", 43_750),
        ("sb_secret_", 12_500),
    ):
        assert_linear(mask_secrets, piece, count)
