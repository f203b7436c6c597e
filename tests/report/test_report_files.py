"""Loading results.json, writing reports atomically, and `devicelab report` as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import devicelab.report
from devicelab.errors import BadInput, ConfigError, EnvironmentProblem
from devicelab.models import Results
from devicelab.models.results import written
from devicelab.report import load_results, write_all, write_text_atomic


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("devicelab: error: "), done.stderr
    return lines[0]


def test_public_surface() -> None:
    for name in devicelab.report.__all__:
        member = getattr(devicelab.report, name)
        assert not callable(member) or member.__doc__, name


@pytest.mark.parametrize(
    ("mutate", "field", "says"),
    [
        (lambda d: d["checks"][1].update(status="passed"), "checks[1].status", 'found "passed"'),
        (lambda d: d.update(schema="devicelab.results/2"), "schema", "devicelab.results/2"),
        (lambda d: d["run"].pop("started_at"), "run.started_at", "missing required field"),
        (lambda d: d["series"][0]["v"].pop(), "series[0]", "t has 121 points, v 120"),
        (lambda d: d["checks"][0].update(colour="red"), "checks[0].colour", "unknown field"),
    ],
)
def test_contract_violations_name_file_and_field(
    raw: dict[str, Any], tmp_path: Path, mutate: Any, field: str, says: str
) -> None:
    mutate(raw)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as caught:
        load_results(path)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{path}: {field}: ") and says in str(caught.value)


def test_bad_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"schema": "devicelab.results/1",\n  "run": {,}}')
    with pytest.raises(ConfigError, match=rf"^{path}:2:11: not valid JSON"):
        load_results(path)
    with pytest.raises(BadInput, match="no such file"):
        load_results(tmp_path / "nope.json")
    with pytest.raises(BadInput, match="is a folder"):
        load_results(tmp_path)


def test_write_all_writes_the_four_files(results: Results, tmp_path: Path) -> None:
    paths = write_all(results, tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == {
        "json": "results.json",
        "md": "report.md",
        "html": "report.html",
        "junit": "junit.xml",
    }
    # results.json holds each check's numbers to 6 significant digits (no float noise).
    as_written = results.model_copy(update={"checks": [written(c) for c in results.checks]})
    assert load_results(paths["json"]) == as_written
    assert paths["md"].read_text().startswith("# devicelab report")
    assert ET.parse(paths["junit"]).getroot().attrib["tests"] == "6"
    assert "<svg" in paths["html"].read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in paths.values()
    )
    assert paths["md"].stat().st_mode & 0o044  # readable by others, not mkstemp's 0600


def test_a_failed_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.md"
    target.write_text("old")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(EnvironmentProblem, match=r"report.md: cannot write \(No space"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
    monkeypatch.undo()
    with pytest.raises(BadInput, match="no such folder"):
        write_text_atomic(tmp_path / "missing" / "r.md", "x")
    with pytest.raises(BadInput, match="is a folder"):
        write_text_atomic(tmp_path, "x")
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_cli_writes_each_format(results_path: Path, tmp_path: Path, cli: Any) -> None:
    done = cli("report", str(results_path), "--format", "md")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# devicelab report — device run")
    assert "< 500 ms · ✅ 250.6 ms" in done.stdout  # the lab's targets.yaml was found
    junit = tmp_path / "junit.xml"
    done = cli("report", str(results_path), "--format", "junit", "-o", str(junit))
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert ET.parse(junit).getroot().attrib["failures"] == "1"
    html = tmp_path / "report.html"
    done = cli("report", str(results_path), "-f", "html", "--output", str(html))
    assert done.returncode == 0, done.stderr
    assert html.read_text().startswith("<!doctype html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml", "report.html"]


def test_cli_bad_input_exits_2_and_keeps_the_old_output(
    raw: dict[str, Any], results_path: Path, tmp_path: Path, cli: Any
) -> None:
    out = tmp_path / "report.md"
    out.write_text("previous report")
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{not json")
    line = one_line_error(cli("report", str(bad_json), "-o", str(out)))
    assert f"{bad_json}:1:2: not valid JSON" in line
    raw["checks"][2]["status"] = "crashed"
    violating = tmp_path / "violating.json"
    violating.write_text(json.dumps(raw))
    line = one_line_error(cli("report", str(violating), "-f", "junit", "-o", str(out)))
    assert f"{violating}: checks[2].status:" in line and 'found "crashed"' in line
    line = one_line_error(cli("report", str(tmp_path / "none.json")))
    assert "none.json: no such file" in line
    assert out.read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "broken.json",
        "report.md",
        "violating.json",
    ]
    # Click's choice error said "Value error, 'pdf' is not one of ..." (pydantic's words).
    line = one_line_error(cli("report", str(bad_json), "--format", "pdf"))
    assert line == (
        "devicelab: error: unknown report format 'pdf' (hint: use one of md, html, junit)"
    )
    line = one_line_error(cli("report", str(results_path), "-f", "htm", "-o", str(out)))
    assert line == (
        "devicelab: error: unknown report format 'htm'; did you mean 'html'? "
        "(hint: use one of md, html, junit)"
    )
    assert out.read_text() == "previous report"


def test_cli_module_imports_no_renderer() -> None:
    code = (
        "import sys, devicelab.cli.report; "
        "print(sorted(m for m in ('devicelab.report', 'pydantic') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_link_a_fifo_and_a_private_file_stay_what_they_are(tmp_path: Path) -> None:
    # -o through a symlink replaced the link with a file (its target kept the old text),
    # a FIFO was unlinked (its reader waited for ever), /dev/stdout became a regular file.
    import stat
    import threading

    real = tmp_path / "real.md"
    real.write_text("old")
    real.chmod(0o600)
    link = tmp_path / "link.md"
    link.symlink_to(real)
    write_text_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert stat.S_IMODE(real.stat().st_mode) == 0o600  # a private report stays private
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_text_atomic(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == ["through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)
    write_text_atomic("/dev/null", "x")  # a device is written to, never replaced
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.md", "pipe", "real.md"]


def test_write_all_replaces_the_four_files_together_or_none(
    results: Results, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("results.json", "report.md", "report.html"):
        (out / name).write_text("old run")
    (out / "junit.xml").mkdir()  # the last one cannot be written
    with pytest.raises(BadInput, match=r"junit\.xml: is a folder"):
        write_all(results, out)
    assert [(out / n).read_text() for n in ("results.json", "report.md", "report.html")] == [
        "old run"
    ] * 3
    assert sorted(p.name for p in out.iterdir()) == [
        "junit.xml",
        "report.html",
        "report.md",
        "results.json",
    ]


def test_o_dev_stdout_writes_to_the_pipe(results_path: Path, cli: Any) -> None:
    # /dev/stdout -> /proc/self/fd/1 -> "pipe:[...]": resolved, it named no file (exit 2).
    done = cli("report", str(results_path), "--format", "md", "-o", "/dev/stdout")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# devicelab report")


def test_a_results_file_cut_short_is_said_to_be_cut_short(
    raw: dict[str, Any], tmp_path: Path
) -> None:
    # json's own words ("Unterminated string starting at") ended mid-sentence.
    text = json.dumps(raw, indent=1)
    path = tmp_path / "results.json"
    for cut in (text[:200], text[: text.index('"run"') + 3]):
        path.write_text(cut)
        with pytest.raises(ConfigError) as caught:
            load_results(path)
        said = caught.value.one_line()
        assert "cut short" in said and not said.rstrip(")").endswith(" at"), said


def test_a_results_file_of_another_contract_version_says_so(
    raw: dict[str, Any], tmp_path: Path
) -> None:
    raw["schema"] = "devicelab.results/2"
    raw["run"]["surprise"] = True  # a newer field: not the problem to report
    path = tmp_path / "results.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as caught:
        load_results(path)
    assert caught.value.field == "schema"
    assert "'devicelab.results/2' is another version" in str(caught.value)
    assert "and 1 more" not in str(caught.value)
