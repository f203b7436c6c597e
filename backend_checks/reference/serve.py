"""What ``devicelab backend serve`` does: prepare a database, then serve until a signal.

Steps: the JWT secret read from (or created once in) devicelab's state directory; the
managed PostgreSQL (``backend_checks.managed``) unless a DSN is given; the messaging
schema installed (idempotent); a generated data set when ``auth.users`` is empty; the
server started; the ``SUPABASE_*`` lines printed once it answers; then it runs until
SIGINT, SIGTERM or SIGHUP, each a graceful stop (websockets get their close frame). The
secret itself is never printed or logged.

A given database is written to only with ``allow_writes`` (``--allow-writes``), unless it
holds this devicelab's reference schema already: then it is served as it is (the managed
cluster is devicelab's own and needs nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend_checks.reference.context import new_jwt_secret
from devicelab.errors import (
    BadInput,
    DeviceLabError,
    EnvironmentProblem,
    UnsafeActionRefused,
)

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_PORT",
    "SEED",
    "jwt_secret_file",
    "keys_issued_at",
    "prepare_database",
    "serve_forever",
]

#: The port of ``supabase start``'s API gateway, so app configs carry over.
DEFAULT_PORT = 54321
#: The data set seeded into an empty database (users >= 64: the generator's hash pool).
SEED: dict[str, int] = {"messages": 5000, "users": 100, "conversations": 200}


def _state_dir() -> Path:
    from backend_checks.managed import state_root

    return state_root() / "reference"


def jwt_secret_file(state_dir: Path | None = None) -> Path:
    """Where the server's JWT secret is kept (created on first use, mode 0600)."""
    return (state_dir or _state_dir()) / "jwt_secret"


def _owner_only(path: Path) -> None:
    """Make the secret file ``path`` owner-only (0600) when it is looser: whoever reads
    the secret can mint a service_role key. Raises EnvironmentProblem when it is another
    user's or its mode cannot be changed."""
    mode = path.stat().st_mode & 0o777
    if not mode & 0o077:
        return
    try:
        if path.stat().st_uid != os.getuid():
            raise PermissionError("not its owner")
        path.chmod(0o600)
    except OSError as exc:
        raise EnvironmentProblem(
            f"the JWT secret {path} is readable by others (mode {mode:o}) and cannot be"
            f" made owner-only: {exc.strerror or exc}",
            hint=f"chmod 600 {path} as its owner, or delete it (new keys are then printed)",
        ) from None


def _jwt_secret(path: Path) -> str:
    """The stored secret (its file made owner-only when looser), or a new one written
    with owner-only permissions. Raises EnvironmentProblem as :func:`_owner_only`, and
    when the state folder cannot hold the file (a file where a folder goes, a folder
    where the secret goes, no permission).

    Made once whatever starts at the same time: under a lock on the folder, written aside
    and renamed in. Two `backend serve`s on a fresh state folder each made a secret, one
    reading the file the other had just truncated; each served with its own, the file
    kept the last, and the keys the first printed stopped working at its next start."""
    from devicelab.files import locked_folder, write_private

    try:
        if (secret := _stored_secret(path)) is not None:
            return secret
        path.parent.mkdir(parents=True, exist_ok=True)
        with locked_folder(path.parent):  # the other maker is done in milliseconds
            if (secret := _stored_secret(path)) is not None:
                return secret
            secret = new_jwt_secret()
            write_private(path, secret + "\n")
    except OSError as exc:
        # The wording of backend check, datagen and run for the same folder.
        culprit = f"{exc.filename}: " if exc.filename and Path(exc.filename) != path.parent else ""
        raise EnvironmentProblem(
            f"cannot use the devicelab state folder {path.parent}: {culprit}{exc.strerror or exc}",
            hint=f"set DEVICELAB_STATE to a folder you can write, or clear the way for the"
            f" JWT secret's file {path}",
        ) from exc
    return secret


def _stored_secret(path: Path) -> str | None:
    """The secret in ``path`` (made owner-only first), or None when there is no file or
    it holds no usable secret (under 32 characters). Raises OSError, EnvironmentProblem."""
    if not path.is_file():
        return None
    _owner_only(path)
    secret = path.read_text().strip()
    return secret if len(secret) >= 32 else None


def keys_issued_at(path: Path) -> int:
    """The ``iat`` of the printed keys: when the secret file was written (it is written
    once), so every start over the same secret prints the same keys, which users paste
    into .env files."""
    return int(path.stat().st_mtime)


#: What to do about a given database whose tables do not fit the reference schema.
_MISFIT_HINT = (
    "serve the app's database, or an empty one with --allow-writes: the schema and a small"
    " data set are created there"
)


def prepare_database(
    dsn: str | None, *, say: Callable[[str], None], allow_writes: bool = True
) -> str:
    """The DSN to serve: the given one or the managed cluster's, with the schema installed
    and seeded when empty: the managed cluster with the story's data set, the one
    ``backend check`` and ``run`` seed (they judge whatever they find there, so a small
    seed here would have them judge 5,000 messages), a given database with SEED.

    Without ``allow_writes`` a given database must hold this devicelab's reference schema
    already: it is then neither re-installed nor seeded (nothing is written). The managed
    cluster is devicelab's own and is prepared either way.

    Raises BadInput (exit 2) for a given database whose tables do not fit the reference
    schema (checked before anything is written) or that refuses the install,
    UnsafeActionRefused (exit 2) for a given database without the schema and without
    ``allow_writes``, BackendUnavailable / ToolMissing / ProbeFailed (exit 3).

    A refusal to seed (the database holds other data) is reported through ``say`` and the
    server still starts.
    """
    import psycopg

    from backend_checks import datagen
    from backend_checks.db import connect, translate
    from backend_checks.seed import ensure_schema

    params = datagen.DatagenParams(**SEED)
    given = dsn is not None
    if dsn is None:
        from backend_checks.check import DEFAULT_SEED_MESSAGES
        from backend_checks.managed import ManagedPostgres

        dsn = ManagedPostgres().ensure()
        params = datagen.DatagenParams(messages=DEFAULT_SEED_MESSAGES)
    writes = allow_writes or not given
    conn = connect(dsn)
    try:
        if given:
            _refuse_misfit(conn)  # before any write, with or without allow_writes
            if not writes and not _holds_our_schema(conn):
                raise UnsafeActionRefused(
                    "the database does not hold this devicelab's reference schema: serving"
                    " it installs the schema (schemas auth, storage, devicelab_realtime;"
                    " tables, roles, functions, grants) and seeds it, which writes",
                    hint="add --allow-writes, on a database that is the server's alone (an"
                    " empty one, never one holding your data); or leave out --dsn to serve"
                    " the managed one",
                )
        if writes:
            # Always: a given database may lack a piece of it. Under the generator's lock:
            # two servers starting together must not install it at the same moment.
            ensure_schema(conn, always=True)
        row = conn.execute("SELECT count(*) FROM auth.users").fetchone()
        conn.commit()
        if row is not None and int(row[0]) == 0:
            if not writes:
                say("not seeded: the database has no users (--allow-writes seeds it)")
            else:
                say(f"seeding the empty database ({params.messages:,} generated messages)")
                try:
                    datagen.generate(conn, params, allow_writes=True)
                except DeviceLabError as exc:
                    say(f"not seeded: {exc.one_line()}")
    except psycopg.Error as exc:
        error = translate(exc, dsn, "preparing the database to serve")
        state = getattr(exc, "sqlstate", None) or ""
        if state == "42501":
            # The install creates schemas and roles: the table owner's rights are not enough.
            error.hint = (
                "connect as a role that may create schemas, roles and tables (the database's"
                " owner with CREATEROLE, or a superuser)"
            )
        elif state.startswith("42"):
            error.hint = _MISFIT_HINT
        raise error from exc
    finally:
        conn.close()
    return dsn


def _refuse_misfit(conn: psycopg.Connection[Any]) -> None:
    """Refuse (BadInput) a database whose tables do not fit the reference schema, as
    ``backend check`` does: a reference table lacking a column the schema's would have
    (its install creates only missing tables, so it would keep that one as it is and fail
    on it), or messages whose database lacks any other piece (the app's own table by that
    name, not ours to fill in around). Read-only; ``conn`` must not be inside a
    transaction. Raises psycopg.Error."""
    from backend_checks.seed import REFERENCE_TABLES, has_messages, missing_reference

    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        missing = missing_reference(conn)
        filled = has_messages(conn)
    columns = [name for name in missing if name.count(".") == 2]
    if not columns and not (filled and missing):
        return
    present = [table for table in REFERENCE_TABLES if table not in missing]
    raise BadInput(
        "the database does not hold devicelab's reference messaging schema: it has "
        f"{', '.join(present)}, but no {', '.join(missing)}",
        hint=_MISFIT_HINT,
    )


def _holds_our_schema(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database holds this devicelab's reference schema as an install left it
    (what :func:`backend_checks.seed.ensure_schema` would leave alone), in a read-only
    transaction; ``conn`` must not be inside one. Raises psycopg.Error."""
    from backend_checks.seed import holds_current_schema

    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        return holds_current_schema(conn)


def _port_or_free(host: str, port: int | None) -> int:
    """``port`` if given; else DEFAULT_PORT when free, else 0 (any free port). Another
    server may still take DEFAULT_PORT before we bind it: see :func:`_serve`."""
    if port is not None:
        return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        try:
            probe.bind((host, DEFAULT_PORT))
        except OSError:
            return 0
    return DEFAULT_PORT


def _storage_root(dsn: str, managed: bool) -> Path:
    from backend_checks.db import redact

    name = "managed" if managed else hashlib.sha256(redact(dsn).encode()).hexdigest()[:12]
    return _state_dir() / "storage" / name


def serve_forever(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    dsn: str | None = None,
    out: Any = None,
    say: Callable[[str], None] | None = None,
    allow_writes: bool = False,
) -> int:
    """Prepare the database, serve, print the ``SUPABASE_*`` lines, run until a signal;
    returns the signal that stopped it (SIGINT, SIGTERM or SIGHUP).

    Raises BadInput for a bad ``host``, and as :func:`prepare_database` (a given ``dsn``
    is written to only with ``allow_writes``); BackendUnavailable when the database or the
    port is not available (only a port that was asked for: the default one, taken, gives
    way to any free port); EnvironmentProblem when the JWT secret's file is readable by
    others and cannot be made owner-only, or the state folder cannot hold the secret or
    the stored files. Warns through ``say`` (default: stderr) when ``host`` is not
    loopback.
    """
    stream = out or sys.stdout

    def note(text: str) -> None:
        print(f"devicelab: {text}", file=sys.stderr, flush=True)

    speak = say or note
    _check_host(host)
    if not _is_loopback(host):
        # The test users' password and the way keys are made are public: on a network
        # address anyone who reaches it reads and writes the data as any test user.
        speak(
            f"warning: listening on {host}, not loopback: the API is open to the network,"
            " with known test passwords and keys (use the default --host 127.0.0.1 unless"
            " the network is yours)"
        )
    # The secret first: a secret file we may not use stops us before the database work.
    secret_file = jwt_secret_file()
    secret = _jwt_secret(secret_file)
    managed = dsn is None
    ready_dsn = prepare_database(dsn, say=speak, allow_writes=allow_writes)
    server = _Server(ready_dsn, host, secret, keys_issued_at(secret_file),
                     _storage_root(ready_dsn, managed))  # fmt: skip
    return asyncio.run(_serve(server, _port_or_free(host, port), port is None, stream))


def _check_host(host: str) -> None:
    """Refuse (BadInput, exit 2) a ``--host`` this machine cannot listen on, before any
    database work: an empty one (aiohttp would listen on every address), ``HOST:PORT``,
    a name that does not resolve, an address that is not this machine's."""
    hint = "give an address of this machine, e.g. 127.0.0.1 (the default); the port is --port"
    if not host.strip():
        raise BadInput("--host is empty: it would listen on every address", hint=hint)
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise BadInput(
            f"--host {host}: not an address, nor a name that resolves", hint=hint
        ) from None
    try:
        with socket.socket(family, kind) as probe:
            probe.bind(address)
    except OSError as exc:
        raise BadInput(f"--host {host}: cannot listen there ({exc.strerror})", hint=hint) from None


def _is_loopback(host: str) -> bool:
    """Whether ``host`` takes this machine's connections only."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to any address


class _Server:
    """What a server is started with (a new ReferenceServer per try of a port)."""

    def __init__(self, dsn: str, host: str, secret: str, issued_at: int, root: Path) -> None:
        self.dsn, self.host, self.secret, self.issued_at, self.root = (
            dsn, host, secret, issued_at, root,
        )  # fmt: skip

    def make(self, port: int) -> Any:
        from backend_checks.reference.server import ReferenceServer

        return ReferenceServer(self.dsn, host=self.host, port=port, storage_root=self.root,
                               jwt_secret=self.secret, keys_issued_at=self.issued_at)  # fmt: skip


#: The signals that stop the server, each gracefully (close frames, pool closed).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def _start(spec: _Server, port: int, default_port: bool) -> Any:
    """The server started on ``port``; on any free port instead when ``port`` is the
    default one (not asked for) and it was taken by the time we bound it. Raises
    BackendUnavailable (PortInUse for a port that was asked for)."""
    from backend_checks.reference.server import PortInUse

    server = spec.make(port)
    try:
        await server.astart()
    except PortInUse:
        if not (default_port and port == DEFAULT_PORT):
            raise
        # Free when probed, taken when bound: another server started at the same moment.
        # The default port was ours to choose, so any free one will do.
        server = spec.make(0)
        await server.astart()
    return server


async def _serve(spec: _Server, port: int, default_port: bool, stream: Any) -> int:
    stop = asyncio.Event()
    came: list[int] = []
    loop = asyncio.get_running_loop()

    def stopping(sig: int) -> None:
        came.append(sig)
        stop.set()

    for sig in _STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping, sig)
    server = await _start(spec, port, default_port)
    try:
        print(f"SUPABASE_URL={server.url}", file=stream)
        print(f"SUPABASE_ANON_KEY={server.anon_key}", file=stream)
        print(f"SUPABASE_SERVICE_ROLE_KEY={server.service_role_key}", file=stream, flush=True)
        await stop.wait()
    finally:
        await server.astop()
    return came[0] if came else int(signal.SIGTERM)
