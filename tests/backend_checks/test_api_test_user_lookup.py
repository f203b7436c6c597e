"""The embedded default's API checks look their test user up in the database: a database
without the messaging schema is one devicelab error (exit 2), not a psycopg traceback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from backend_checks.api_checks import _test_user
from devicelab.errors import BackendUnavailable, BadInput


def test_a_database_without_the_schema_is_bad_input(empty_db: str) -> None:
    with pytest.raises(BadInput) as refused:
        _test_user(empty_db)
    assert "finding a generated test user" in refused.value.one_line()


def test_a_schema_without_users_is_named(make_db: Callable[[], str]) -> None:
    import psycopg

    from backend_checks.datagen import install_schema

    dsn = make_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        install_schema(conn)
    with pytest.raises(BackendUnavailable, match="no generated test user"):
        _test_user(dsn)
