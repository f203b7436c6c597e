"""The JUnit XML report: counts, one testcase per check, and the shape CI parsers accept."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from devicelab.models import Results
from devicelab.report import render_junit

#: The elements and attributes the common JUnit schemas allow (Jenkins junit-10.xsd,
#: GitLab, junitparser), with the ones that must be present; anything else is an error.
SCHEMA: dict[str, dict[str, Any]] = {
    "testsuites": {
        "children": {"testsuite"},
        "required": {"tests", "failures", "errors", "time"},
        # Jenkins xUnit's junit-10.xsd allows no "skipped" here (only on <testsuite>).
        "optional": {"name", "disabled"},
    },
    "testsuite": {
        "children": {"properties", "testcase", "system-out", "system-err"},
        "required": {"name", "tests", "failures", "errors", "time"},
        "optional": {"skipped", "timestamp", "hostname", "id", "package", "disabled", "file"},
    },
    "properties": {"children": {"property"}, "required": set(), "optional": set()},
    "property": {"children": set(), "required": {"name", "value"}, "optional": set()},
    "testcase": {
        "children": {"failure", "error", "skipped", "system-out", "system-err"},
        "required": {"name", "classname", "time"},
        "optional": {"assertions", "status", "file", "line"},
    },
    "failure": {"children": set(), "required": {"message", "type"}, "optional": set()},
    "error": {"children": set(), "required": {"message", "type"}, "optional": set()},
    "skipped": {"children": set(), "required": set(), "optional": {"message"}},
    "system-out": {"children": set(), "required": set(), "optional": set()},
}
NUMERIC = {"tests", "failures", "errors", "skipped", "time"}


def validate(element: ET.Element) -> None:
    """Raise AssertionError where ``element`` strays from SCHEMA, recursively."""
    rule = SCHEMA.get(element.tag)
    assert rule is not None, f"unknown element <{element.tag}>"
    attrs = set(element.attrib)
    assert rule["required"] <= attrs, (element.tag, rule["required"] - attrs)
    assert attrs <= rule["required"] | rule["optional"], (element.tag, attrs)
    for name in attrs & NUMERIC:
        value = float(element.attrib[name])
        assert value >= 0 and (name == "time" or value.is_integer()), (name, value)
    children = [child.tag for child in element]
    assert set(children) <= rule["children"], (element.tag, children)
    if element.tag == "testcase":
        verdicts = [c for c in children if c in ("failure", "error", "skipped")]
        assert len(verdicts) <= 1 and children.count("system-out") <= 1, children
    if element.tag == "testsuite":
        assert children[:1] == ["properties"] or "properties" not in children
    for child in element:
        validate(child)


def counts(suite: ET.Element) -> dict[str, int]:
    cases = suite.findall("testcase")
    return {
        "tests": len(cases),
        "failures": sum(1 for c in cases if c.find("failure") is not None),
        "errors": sum(1 for c in cases if c.find("error") is not None),
        "skipped": sum(1 for c in cases if c.find("skipped") is not None),
    }


def test_counts_and_one_testcase_per_check(results: Results) -> None:
    xml = render_junit(results)
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites ')
    root = ET.fromstring(xml.encode("utf-8"))
    validate(root)
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    expected = {"tests": 6, "failures": 1, "errors": 1, "skipped": 1}
    assert counts(suite) == expected
    assert {k: int(suite.attrib[k]) for k in expected} == expected
    del expected["skipped"]
    for element in (root, suite):
        assert {k: int(element.attrib[k]) for k in expected} == expected
        assert float(element.attrib["time"]) == 3650.0
    assert suite.attrib["name"] == "devicelab.device.pixel-7.4g"
    assert suite.attrib["timestamp"] == "2026-11-28T21:04:12"
    cases = suite.findall("testcase")
    assert [c.attrib["name"] for c in cases] == [c.id for c in results.checks]
    by_name = {c.attrib["name"]: c for c in cases}
    assert by_name["message_delivery"].attrib["classname"] == "devicelab.device.realtime"
    assert by_name["battery_drain"].attrib["time"] == "3650.000"  # evidence.duration_s
    failure = by_name["conversation_list_load"].find("failure")
    assert failure is not None and failure.attrib["type"] == "TargetMissed"
    assert failure.attrib["message"] == "p95 290.5 ms misses < 200 ms"
    error = by_name["image_upload_1mb"].find("error")
    assert error is not None and error.attrib["message"].startswith("storage upload failed: 503")
    skipped = by_name["local_cache_query_50"].find("skipped")
    assert skipped is not None and "sqlite" in skipped.attrib["message"]
    assert len(by_name["message_delivery"]) == 1  # a pass has only its system-out


def test_properties_carry_the_run_and_system_out_the_evidence(results: Results) -> None:
    root = ET.fromstring(render_junit(results))
    props = {p.attrib["name"]: p.attrib["value"] for p in root.iter("property")}
    assert props["run.id"] == "2026-11-28T21-04-12-pixel7-4g"
    assert props["device.platform"] == "android" and props["network.name"] == "4g"
    assert props["network.achieved.rtt_ms"] == "172.4"
    assert props["backend.url"] == "https://abcdefgh.supabase.co"
    case = next(c for c in root.iter("testcase") if c.attrib["name"] == "conversation_list_load")
    out = case.findtext("system-out") or ""
    assert "value: p95 290.5 ms vs target < 200 ms" in out
    assert "target row: story 8.1.7, Performance Targets by Platform: Conversation List" in out
    assert "  conversations: 50" in out and '"… (+25 more)"' in out
    # The control byte of the evidence is replaced, so the file stays XML.
    assert "\ufffd control" in out
    error_case = next(c for c in root.iter("testcase") if c.attrib["name"] == "image_upload_1mb")
    error_out = error_case.findtext("system-out") or ""
    assert "authorization: ***" in error_out and "hunter2" not in error_out


def test_junitparser_reads_the_counts(results: Results, tmp_path: Any) -> None:
    junitparser = pytest.importorskip("junitparser")
    path = tmp_path / "junit.xml"
    path.write_text(render_junit(results), encoding="utf-8")
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (6, 1, 1, 1)
    kinds = {case.name: [type(r).__name__ for r in case.result] for case in suite}
    assert kinds == {
        "message_delivery": [],
        "conversation_list_load": ["Failure"],
        "image_upload_1mb": ["Error"],
        "local_cache_query_50": ["Skipped"],
        "memory_100_conversations": [],
        "battery_drain": [],
    }
    suite.update_statistics()  # recounted from the testcases: the same numbers
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (6, 1, 1, 1)


def test_empty_and_hostile_runs_stay_valid(raw: dict[str, Any]) -> None:
    raw["run"]["finished_at"] = None
    raw["checks"] = raw["checks"][:1]
    raw["checks"][0]["id"] = 'a"b<c>&\x02'
    raw["checks"][0]["reason"] = "]]> \x1b[31m"
    root = ET.fromstring(render_junit(Results.model_validate(raw)))
    validate(root)
    case = root.find("testsuite/testcase")
    assert case is not None and case.attrib["name"] == 'a"b<c>&\ufffd'
    raw["checks"] = []
    root = ET.fromstring(render_junit(Results.model_validate(raw)))
    validate(root)
    # Stopped: no wall time, so as far as it got (the fixture's series run 3600 s); its
    # one testcase is the run's own "unfinished" error.
    assert root.attrib["tests"] == "1" and root.attrib["time"] == "3600.000"


@pytest.mark.parametrize("got_to", [0, 2])
def test_an_unfinished_run_is_an_error_to_ci(
    raw: dict[str, Any], tmp_path: Any, got_to: int
) -> None:
    # A farm stopped at 6 a.m. wrote tests="0" failures="0" errors="0": CI read it as green.
    raw["run"]["finished_at"] = None
    raw["checks"] = [c for c in raw["checks"] if c["status"] == "pass"][:got_to]
    text = render_junit(Results.model_validate(raw))
    root = ET.fromstring(text)
    validate(root)
    suite = root.find("testsuite")
    assert suite is not None
    want = {"tests": got_to + 1, "failures": 0, "errors": 1, "skipped": 0}
    assert counts(suite) == want
    for element in (root, suite):
        assert {k: int(element.attrib[k]) for k in ("tests", "failures", "errors")} == {
            k: want[k] for k in ("tests", "failures", "errors")
        }
    case = suite.findall("testcase")[-1]
    assert (case.attrib["classname"], case.attrib["name"]) == ("devicelab.run", "unfinished")
    error = case.find("error")
    assert error is not None
    checks = "1 check" if got_to == 1 else f"{got_to} checks"
    assert error.attrib["message"] == (
        f"the run did not finish: stopped before its plan was through, with {checks}"
    )
    props = {p.attrib["name"]: p.attrib["value"] for p in suite.iter("property")}
    assert props["run.finished"].startswith("no: stopped")
    junitparser = pytest.importorskip("junitparser")
    path = tmp_path / "junit.xml"
    path.write_text(text, encoding="utf-8")
    (parsed,) = list(junitparser.JUnitXml.fromfile(str(path)))
    assert (parsed.tests, parsed.failures, parsed.errors) == (got_to + 1, 0, 1)


@pytest.mark.parametrize(
    "bad",
    [
        '<testsuites tests="1" failures="0" errors="0" time="0"><testsuite name="s" tests="1" '
        'failures="0" errors="0" time="0"><testcase name="a" classname="c"/></testsuite>'
        "</testsuites>",
        '<testsuites tests="1" failures="0" errors="0" time="0"><testsuite name="s" tests="1" '
        'failures="0" errors="0" time="0"><testcase name="a" classname="c" time="0">'
        "<failure message='m' type='t'/><skipped/></testcase></testsuite></testsuites>",
        '<testsuites tests="1.5" failures="0" errors="0" time="0"/>',
        '<testsuites tests="1" failures="0" errors="0" time="0"><testcase/></testsuites>',
    ],
)
def test_the_schema_check_rejects_strays(bad: str) -> None:
    with pytest.raises(AssertionError):
        validate(ET.fromstring(bad))
