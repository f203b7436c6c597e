"""A pytest lab session's checks say what the test did to the link: cut it
(``proxy.go_offline``) or switched it (``set_profile``), and which test measured them.

A real web lab (``Lab.session``: managed PostgreSQL of its own, the reference server,
the built app in real Chromium, the shaped proxy on 4G), as the ``devicelab_lab`` fixture
starts it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devicelab.lab import LabSession
from devicelab.report import compare, render_markdown
from devicelab.report._common import verdict_text
from tests.web_session import web_session


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSession]:
    """A started web lab on 4G with users A and B signed in; its cluster stopped after."""
    with web_session("4g", tmp_path_factory.mktemp("out"), "link-notes") as started:
        yield started


@pytest.fixture
def link(session: LabSession) -> Iterator[LabSession]:
    """The session, its link put back (4G, online) after the test, as the plugin does."""
    yield session
    session.proxy.set_profile(session.lab.profile)
    session.proxy.go_online()


@pytest.mark.slow
def test_an_error_on_a_link_the_test_cut_says_so_in_its_hint(link: LabSession) -> None:
    link.proxy.go_offline()
    check = link.measure("conversation_list_load", query_count=2, probe_timeout_s=15)
    print(check.reason)
    assert check.status == "error", check
    assert "reaches the Supabase API" not in check.reason
    assert "(hint: the test cut the link (proxy.go_offline)" in check.reason, check.reason
    assert "still offline at the end" in check.reason
    assert check.evidence["link_offline"] is True
    assert check.evidence["test"].endswith(
        "test_session_link_notes.py::test_an_error_on_a_link_the_test_cut_says_so_in_its_hint"
    )


@pytest.mark.slow
def test_a_pass_over_an_outage_the_test_made_says_so(link: LabSession) -> None:
    link.proxy.go_offline(3)
    check = link.measure("conversation_list_load", query_count=2, probe_timeout_s=30)
    print(check.reason)
    assert check.status in ("pass", "fail"), check.reason
    assert check.evidence["link_offline"] is True
    assert "measured with the link cut by the test (proxy.go_offline)" in check.reason
    assert "back during it" in check.reason


@pytest.mark.slow
def test_a_check_on_the_sessions_link_carries_no_note(link: LabSession) -> None:
    check = link.measure("conversation_list_load", query_count=2)
    assert "link_offline" not in check.evidence and "link_profile" not in check.evidence
    assert "measured with the link" not in check.reason


@pytest.mark.slow
def test_a_pytest_sessions_checks_name_their_test_and_pair_by_link(link: LabSession) -> None:
    """A session measuring message_delivery on 4G, then on a switched slow-3g link,
    compared with a baseline of the 4G one alone: both are shown, the 4G one compared, the
    slow-3g one named as not comparable (nothing regressed by the link alone)."""
    first = link.measure("message_delivery", delivery_count=2)
    link.proxy.set_profile("slow-3g")
    second = link.measure("message_delivery", delivery_count=2)
    assert "link_profile" not in first.evidence
    assert second.evidence["link_profile"] == "slow-3g"
    assert first.evidence["test"] == second.evidence["test"]
    results = link.results()
    baseline = results.model_copy(update={"checks": [first]})
    comparison = compare(results, baseline)
    rows = [c for c in comparison.changes if c.id == "message_delivery"]
    assert len(rows) == 2 and not comparison.regressed
    slow = next(c for c in rows if c.after is not None and c.after.evidence.get("link_profile"))
    assert slow.verdict == "not compared" and "slow-3g" in slow.why
    assert any("slow-3g" in note for note in comparison.notes), comparison.notes
    # Measured under pytest: the summary speaks of pytest's exit code, not the CLI's.
    assert "pytest" in verdict_text(results)
    assert "pytest" in render_markdown(results)
