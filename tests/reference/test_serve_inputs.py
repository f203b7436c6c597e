"""``devicelab backend serve`` given what it cannot use: a state folder that is a file, a
database that is not the server's to write, tables that do not fit, a storage folder that
cannot be made, and ``--host 0.0.0.0``. Each is one line and its exit code, never a
traceback; a database not the server's is left as it was.

Scratch databases are named ``dl_test_serve_*`` on the local PostgreSQL and dropped; the
served database of the working cases is the session's ``scratch_dsn`` (it holds the
reference schema already, so serving it writes nothing without --allow-writes).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from conftest import fresh_database

from tests.serve_process import start_serve

pytestmark = pytest.mark.timeout(120)

_SERVE = [sys.executable, "-m", "devicelab", "backend", "serve", "--port", "0"]
#: A database nothing answers at: the cases that stop before the database never reach it.
_NOWHERE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


@pytest.fixture
def make_db() -> Iterator[Callable[[str], str]]:
    """A factory of scratch databases made with the given SQL (may be empty); returns each
    one's DSN. All are dropped afterwards."""
    with contextlib.ExitStack() as made:

        def create(sql: str) -> str:
            dsn, _ = made.enter_context(fresh_database("serve"))
            if sql:
                with psycopg.connect(dsn) as conn:
                    conn.execute(sql)  # type: ignore[arg-type]
            return dsn

        yield create


def _serve(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A serve expected to stop by itself (refused, or failed)."""
    return subprocess.run(
        [*_SERVE, *args], capture_output=True, text=True, timeout=90, check=False,
        env={**os.environ, "DEVICELAB_STATE": str(state)},
    )  # fmt: skip


def _one_error_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The single ``devicelab: error:`` line of a command that exited ``code``."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and lines[0].startswith("devicelab: error: "), done.stderr
    assert done.stdout == ""
    return lines[0]


def _schemas_and_tables(dsn: str) -> tuple[set[str], set[str]]:
    """The database's own schemas and the tables of its public schema."""
    with psycopg.connect(dsn) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace"
            " WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
        ).fetchall()
        tables = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind IN ('r', 'p', 'v')"
        ).fetchall()
    return {s for (s,) in schemas}, {t for (t,) in tables}


# --- 1. the state folder -------------------------------------------------------------------


@pytest.mark.parametrize("given", [True, False], ids=["dsn", "managed"])
def test_a_state_folder_that_is_a_file_is_one_line_and_exit_3(tmp_path: Path, given: bool) -> None:
    # It was a NotADirectoryError traceback and exit 1, before anything was served.
    state = tmp_path / "afile"
    state.write_text("not a folder\n")
    done = _serve(state, *(["--dsn", _NOWHERE] if given else []))
    line = _one_error_line(done, 3)
    assert f"cannot use the devicelab state folder {state}" in line
    assert "DEVICELAB_STATE" in line


def test_a_secret_path_that_is_a_folder_is_one_line_and_exit_3(tmp_path: Path) -> None:
    secret = tmp_path / "reference" / "jwt_secret"
    secret.mkdir(parents=True)
    line = _one_error_line(_serve(tmp_path, "--dsn", _NOWHERE), 3)
    assert "cannot use the devicelab state folder" in line
    assert f"{secret}: Is a directory" in line
    assert secret.is_dir()  # nothing of the user's removed


# --- 2. a database that is not the server's ------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    ["", "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, 'x')"],
    ids=["empty", "someone-elses-data"],
)
def test_a_given_database_is_not_written_without_allow_writes(
    make_db: Callable[[str], str], tmp_path: Path, sql: str
) -> None:
    # It installed schemas auth, storage and devicelab_realtime, tables, roles and
    # functions, seeded the database, and served: exit 0, without being asked to write.
    dsn = make_db(sql)
    before = _schemas_and_tables(dsn)
    line = _one_error_line(_serve(tmp_path, "--dsn", dsn), 2)
    assert "--allow-writes" in line
    assert _schemas_and_tables(dsn) == before


def test_a_database_holding_our_schema_is_served_without_allow_writes(
    scratch_dsn: str, tmp_path: Path
) -> None:
    proc, lines = _start(tmp_path, "--dsn", scratch_dsn)
    code, err = _stop(proc)
    assert code == 0, err
    assert lines["SUPABASE_URL"].startswith("http://127.0.0.1:")


# --- 3. tables that do not fit -------------------------------------------------------------

_UNTYPED = "CREATE TABLE messages (id int PRIMARY KEY, body text)"
#: Every column the checks read, but an id the schema's foreign keys cannot refer to.
_MISTYPED = (
    "CREATE TABLE messages (id int PRIMARY KEY, conversation_id uuid, created_at timestamptz)"
)


@pytest.mark.parametrize("writes", [True, False], ids=["allow-writes", "no-writes"])
def test_tables_that_do_not_fit_are_named_in_one_line_and_exit_2(
    make_db: Callable[[str], str], tmp_path: Path, writes: bool
) -> None:
    # It was psycopg's error and its DETAIL line, exit 3, with a hint about rights.
    dsn = make_db(_UNTYPED)
    before = _schemas_and_tables(dsn)
    line = _one_error_line(_serve(tmp_path, "--dsn", dsn, *(["--allow-writes"] * writes)), 2)
    assert "does not hold devicelab's reference messaging schema: it has public.messages" in line
    assert "public.messages.conversation_id" in line and "DETAIL" not in line
    assert "create schemas, roles" not in line
    assert _schemas_and_tables(dsn) == before  # refused before any write


def test_a_misfit_found_while_installing_is_one_line_exit_2_and_rolled_back(
    make_db: Callable[[str], str], tmp_path: Path
) -> None:
    dsn = make_db(_MISTYPED)
    before = _schemas_and_tables(dsn)
    line = _one_error_line(_serve(tmp_path, "--dsn", dsn, "--allow-writes"), 2)
    assert "does not match devicelab's reference schema" in line
    assert "message_read_receipts_message_id_fkey" in line and "DETAIL" not in line
    assert _schemas_and_tables(dsn) == before  # the install was one transaction


# --- 4. the storage folder -----------------------------------------------------------------


def test_a_storage_folder_that_cannot_be_made_is_not_called_a_listen_failure(
    scratch_dsn: str, tmp_path: Path
) -> None:
    from backend_checks.reference.server import ReferenceServer
    from devicelab.errors import BackendUnavailable, EnvironmentProblem

    blocker = tmp_path / "storage"
    blocker.write_text("a file where the folder goes\n")
    server = ReferenceServer(scratch_dsn, port=0, storage_root=blocker / "root")
    with pytest.raises(EnvironmentProblem) as caught:
        server.start()
    error = caught.value
    assert not isinstance(error, BackendUnavailable)  # not the port, not the database
    assert f"cannot use its storage folder {blocker / 'root'}: Not a directory" in error.message
    assert "listen" not in error.message and "port" not in error.hint


def test_serve_says_its_storage_folder_cannot_be_used(scratch_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "storage").write_text("a file where the folder goes\n")
    line = _one_error_line(_serve(tmp_path, "--dsn", scratch_dsn), 3)
    assert f"cannot use its storage folder {tmp_path / 'reference' / 'storage'}" in line
    assert "cannot listen" not in line and "--port" not in line


# --- 5. every address ----------------------------------------------------------------------


def test_every_address_prints_a_url_a_client_can_use(scratch_dsn: str, tmp_path: Path) -> None:
    # It printed SUPABASE_URL=http://0.0.0.0:PORT, an address no other machine can use.
    proc, lines = _start(tmp_path, "--dsn", scratch_dsn, "--host", "0.0.0.0")
    try:
        url = lines["SUPABASE_URL"]
        host = urlsplit(url).hostname
        assert host not in (None, "0.0.0.0"), url
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(f"{url}/health", timeout=10) as answer:
            assert json.loads(answer.read())["ok"] is True
        # The tokens it issues name it the same way (the issuer was http://0.0.0.0:PORT).
        sign_in = urllib.request.Request(
            f"{url}/auth/v1/token?grant_type=password",
            data=json.dumps({"email": "testuser1@example.com", "password": "password123"}).encode(),
            headers={"apikey": lines["SUPABASE_ANON_KEY"], "Content-Type": "application/json"},
        )
        with direct.open(sign_in, timeout=10) as answer:
            token = json.loads(answer.read())["access_token"]
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert claims["iss"] == f"{url}/auth/v1", claims
    finally:
        code, err = _stop(proc)
    assert code == 0, err


def test_only_every_address_is_renamed() -> None:
    from backend_checks.reference.addresses import usable_url

    assert usable_url("127.0.0.1", 5) == "http://127.0.0.1:5"
    assert usable_url("localhost", 5) == "http://localhost:5"
    assert usable_url("::1", 5) == "http://[::1]:5"
    assert "0.0.0.0" not in usable_url("0.0.0.0", 5)
    everywhere6 = usable_url("::", 5)
    assert "[::]" not in everywhere6 and everywhere6.endswith(":5")


def test_a_server_started_from_python_on_every_address_is_named_as_serve_names_it(
    scratch_dsn: str,
) -> None:
    # Its url and its tokens' iss said http://0.0.0.0:PORT (only `backend serve` fixed them).
    from backend_checks.reference.server import ReferenceServer

    with ReferenceServer(scratch_dsn, host="0.0.0.0") as server:
        assert urlsplit(server.url).hostname not in (None, "0.0.0.0"), server.url
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        sign_in = urllib.request.Request(
            f"{server.url}/auth/v1/token?grant_type=password",
            data=json.dumps({"email": "testuser1@example.com", "password": "password123"}).encode(),
            headers={"apikey": server.anon_key, "Content-Type": "application/json"},
        )
        with direct.open(sign_in, timeout=10) as answer:
            payload = json.loads(answer.read())["access_token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["iss"] == f"{server.url}/auth/v1", claims


def _start(state: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """A serve process (on any free port) and its three printed SUPABASE_* lines."""
    return start_serve(state, "--port", "0", *args)


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err
