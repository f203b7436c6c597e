"""``connection_room`` reads a typed ConnectionRoom (STYLE.md habit 6), and a load check's
``evidence.connections`` in results.json keeps its JSON: the same keys, in the same order."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from backend_checks import check_load
from backend_checks.check import CheckOptions
from backend_checks.check_load import connection_room, load_checks
from devicelab.models import Check, ConnectionRoom

KEYS = [
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",
    "in_use",
    "role_limit",
    "database_limit",
    "free",
]


def test_connection_room_is_a_model_read_from_the_server(empty_db: str) -> None:
    room = connection_room(empty_db)
    assert isinstance(room, ConnectionRoom)
    # The tests connect as a superuser: no role or database limit binds it.
    assert (room.role_limit, room.database_limit) == (None, None)
    assert room.in_use >= 0 and 0 < room.free <= room.max_connections - room.in_use
    assert list(room.model_dump(mode="json")) == KEYS


def test_an_unreadable_server_has_no_room() -> None:
    assert connection_room("host=127.0.0.1 port=1 dbname=nowhere connect_timeout=1") is None


def test_load_evidence_keeps_the_connections_json(monkeypatch: pytest.MonkeyPatch) -> None:
    room = ConnectionRoom(
        max_connections=100,
        superuser_reserved_connections=3,
        reserved_connections=0,
        in_use=7,
        role_limit=60,
        database_limit=None,
        free=60,
    )
    step = Check(id="load_100", title="100 users", category="load", status="pass",
                 reason="p95 120 ms", evidence={"users": 100})  # fmt: skip

    def ran(*_: object, **__: object) -> tuple[list[Check], ConnectionRoom, list[str]]:
        return [step], room, []

    monkeypatch.setattr(check_load, "_run", ran)
    dsn = "postgresql://tester@db.example:5432/app"
    [check] = load_checks(dsn, CheckOptions(load_s=1), managed=False)
    connections = check.evidence["connections"]
    assert type(connections) is dict and list(connections) == KEYS
    assert json.dumps(connections) == (
        '{"max_connections": 100, "superuser_reserved_connections": 3,'
        ' "reserved_connections": 0, "in_use": 7, "role_limit": 60,'
        ' "database_limit": null, "free": 60}'
    )
    assert "100 sessions exceed the 60 connections the server had free" in check.reason
    json.loads(check.model_dump_json())  # results.json takes it as it is


def test_a_room_is_frozen_and_never_negative() -> None:
    room = ConnectionRoom.model_validate(dict.fromkeys(KEYS, 0))
    with pytest.raises(ValidationError):
        room.free = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ConnectionRoom.model_validate({**dict.fromkeys(KEYS, 0), "free": -1})
