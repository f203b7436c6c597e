"""``proxy check --json`` and a run's ``run.network`` describe a profile alike.

They were built in three places: the check wrote ``rtt_ms: null`` for ``none`` where a
run's results.json wrote ``0.0``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devicelab import config

DEVICELAB = [sys.executable, "-c", "from devicelab.cli import main; main()"]

#: A lab's own profile that limits the bandwidth and adds no delay.
_BANDWIDTH_ONLY = """
  bw-only:
    label: Bandwidth only
    source: "tests: a limit without a delay"
    down_kbps: 40000
    up_kbps: 20000
"""


@pytest.fixture
def lab_home(tmp_path: Path) -> Path:
    """A DEVICELAB_HOME whose profiles/networks.yaml is the shipped one plus ``bw-only``."""
    shipped = config.find_file("profiles/networks.yaml")
    (tmp_path / "profiles").mkdir()
    text = shipped.read_text(encoding="utf-8").rstrip("\n") + "\n" + _BANDWIDTH_ONLY
    (tmp_path / "profiles" / "networks.yaml").write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("network", ["none", "bw-only"])
def test_proxy_check_json_and_run_network_agree(
    network: str, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "DEVICELAB_HOME": str(lab_home)}
    done = subprocess.run(
        [*DEVICELAB, "proxy", "check", "--network", network, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    checked = json.loads(done.stdout)

    from devicelab.lab import Lab

    monkeypatch.setenv("DEVICELAB_HOME", str(lab_home))
    lab = Lab("web", network, scenarios=["message_delivery"])
    # What a run writes when it started no proxy; with one, the same plus `achieved`.
    run = lab._run_info(datetime.now(UTC), None, None, None)
    assert run.network is not None
    written = json.loads(run.network.model_dump_json())

    assert checked["network"] == written["name"] == network
    for field in ("rtt_ms", "down_kbps", "up_kbps", "loss_pct"):
        assert checked["profile"][field] == written[field], field
    # No link: no figure, as for an unlimited rate; a link without delay: 0, and judged.
    assert written["rtt_ms"] == (None if network == "none" else 0.0)
    assert checked["verdict"] == ("skip" if network == "none" else "pass")
