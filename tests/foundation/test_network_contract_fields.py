"""run.network in results.json holds the contract's fields (DESIGN.md) for every shipped
profile: readers validating against the first published devicelab.results/1 schema,
which refuses unknown fields, must read today's files."""

from __future__ import annotations

import json

from devicelab import config
from devicelab.models import NetworkInfo
from devicelab.models.results import AchievedNetwork

#: DESIGN.md: "network": {name, rtt_ms, down_kbps, up_kbps, loss_pct, "achieved": {...}}.
_CONTRACT = {"name", "rtt_ms", "down_kbps", "up_kbps", "loss_pct", "achieved"}


def test_every_shipped_profile_writes_only_the_contracts_network_fields() -> None:
    for name, profile in config.load_networks().profiles.items():
        info = NetworkInfo(
            name=name,
            rtt_ms=profile.rtt_ms,
            down_kbps=profile.down_kbps,
            up_kbps=profile.up_kbps,
            loss_pct=profile.loss_pct,
            jitter_ms=profile.jitter_ms,
            achieved=AchievedNetwork(rtt_ms=1.0, down_kbps=2.0, up_kbps=3.0),
        )
        assert set(json.loads(info.model_dump_json())) == _CONTRACT, name


def test_a_profile_with_jitter_keeps_it_for_the_off_profile_judgement() -> None:
    info = NetworkInfo(name="custom", rtt_ms=100.0, jitter_ms=20.0)
    written = json.loads(info.model_dump_json())
    assert written["jitter_ms"] == 20.0
    assert NetworkInfo.model_validate(written).jitter_ms == 20.0
