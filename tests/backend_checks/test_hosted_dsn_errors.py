"""libpq's parse errors of a DSN with a password (an outside tester's findings): the
password stays hidden, but the option the user must fix is named (``invalid connection
option "***"`` told nothing).
"""

from __future__ import annotations

import pytest

from backend_checks.db import connect
from devicelab.errors import BackendUnavailable

BASE = "host=127.0.0.1 port=5432 user=u password=Secret dbname=d"


@pytest.mark.parametrize(
    ("dsn", "said"),
    [
        (f"{BASE} bogus=1", 'invalid connection option "bogus"'),
        (f"{BASE} connect_timeout=abc", "bad value for connect_timeout: 'abc'"),
        ("postgresql://u:Secret@127.0.0.1:5432/d?bogus=1", 'invalid URI query parameter: "bogus"'),
        ("postgresql://u:Secret@127.0.0.1/d?connect_timeout=abc", "connect_timeout: 'abc'"),
    ],
)
def test_a_bad_option_is_named_and_the_password_hidden(dsn: str, said: str) -> None:
    with pytest.raises(BackendUnavailable) as refused:
        connect(dsn)
    line = refused.value.one_line()
    assert said in line, line
    assert "Secret" not in line


@pytest.mark.parametrize(
    ("dsn", "piece"),
    [
        # A password with a space libpq did not read as one: "ret" is a piece of it.
        ("host=127.0.0.1 user=u password=Sec ret dbname=d", "ret"),
        # A word that is also an option's name elsewhere is still the password's piece.
        ("host=127.0.0.1 user=u password=Sec bogus dbname=d bogus=1", "bogus"),
        # Unquoted, the password may go on past a space: a word with "=" that names no
        # option libpq knows may be its piece ("correct horse=battery staple").
        ("host=127.0.0.1 port=1 user=u password=correct horse=battery staple dbname=d", "horse"),
        ("host=127.0.0.1 port=1 user=u password=Sec bogus=1", "bogus"),
    ],
)
def test_a_piece_of_the_password_stays_hidden(dsn: str, piece: str) -> None:
    with pytest.raises(BackendUnavailable) as refused:
        connect(dsn)
    assert f'"{piece}"' not in refused.value.one_line()
