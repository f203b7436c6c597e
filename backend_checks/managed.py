"""The embedded default: a PostgreSQL cluster that devicelab creates, starts and stops itself.

Lifecycle of :class:`ManagedPostgres`::

    ensure()  -> initdb once (first use), start if stopped, create the database; returns a DSN
    running() -> whether the server answers
    stop()    -> pg_ctl stop -m fast (``devicelab backend stop``); True if it was running

The cluster lives in ``<state>/pg<major>/data`` where ``<state>`` is ``$DEVICELAB_STATE``,
else ``~/.local/share/devicelab`` (``/var/lib/devicelab`` for root, whose home the
``postgres`` user cannot enter). It listens on 127.0.0.1 only, on a free port chosen at
creation and remembered in its postgresql.conf (a new one is chosen if another program
took it meanwhile), and on a unix socket in its data directory, which is what devicelab
itself uses (trust, reachable only by the cluster's owner and root). TCP connections need
the password kept in ``<state>/pg<major>/password`` (mode 0600).

initdb refuses to run as root, so as root every server command runs as the ``postgres``
user (``runuser -u postgres --``) and the cluster's directory belongs to it.
``pg_stat_statements`` and ``auto_explain`` are preloaded (``pg_stat_statements.track =
all``) so the checks can see statements inside functions.

A new cluster is built in a sibling folder, ``data.new-<pid>-<random>``, and renamed to
``data`` only once initdb finished and our settings are written: a run stopped while it
creates the cluster leaves no half-made ``data`` that later runs would refuse. Its initdb
is killed with it (SIGINT, SIGTERM: any exception), and the next creation removes every
``data.new-*`` left behind (by a run killed outright, whose initdb may still be writing
its own; the unique names keep the two apart).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from devicelab.errors import BackendUnavailable, BadInput, EnvironmentProblem, ToolMissing
from devicelab.ports import free_port

__all__ = ["INSTALL_HINT", "ManagedPostgres", "find_bindir", "state_root"]

INSTALL_HINT = "apt-get install postgresql-15 postgresql-15-hypopg"
DATABASE = "devicelab"
_CONF_BEGIN = "# --- devicelab managed settings ---"
#: The prefix of a cluster being built next to ``data`` (see the module docstring).
_BUILDING = "data.new-"


def state_root() -> Path:
    """Where devicelab keeps its state: $DEVICELAB_STATE, else a per-user default."""
    if env := os.environ.get("DEVICELAB_STATE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/devicelab")
    return Path.home() / ".local" / "share" / "devicelab"


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: $DEVICELAB_PG_BINDIR, the newest
    /usr/lib/postgresql/*/bin, or the PATH. Raises BadInput when $DEVICELAB_PG_BINDIR is
    set but holds neither (the user asked for those binaries: another server would be a
    surprise), ToolMissing with the install command when none is found."""
    candidates: list[Path] = []
    if env := os.environ.get("DEVICELAB_PG_BINDIR"):
        chosen = Path(env)
        if not ((chosen / "initdb").is_file() and (chosen / "pg_ctl").is_file()):
            raise BadInput(
                f"DEVICELAB_PG_BINDIR={env}: no initdb and pg_ctl there",
                hint="point it at a PostgreSQL bin folder, e.g. /usr/lib/postgresql/15/bin, "
                "or unset it to use the newest one installed",
            )
        return chosen

    def version(path: str) -> float:
        match = re.search(r"/postgresql/([\d.]+)/bin", path)
        return float(match.group(1)) if match else 0.0

    candidates += [
        Path(p)
        for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)[::-1]  # noqa: PTH207
    ]
    if which := shutil.which("pg_ctl"):
        candidates.append(Path(which).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise ToolMissing("PostgreSQL server (initdb, pg_ctl)", hint=INSTALL_HINT)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server binds: a port left in TIME_WAIT by our own last run is free;
        # one another program listens on is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ManagedPostgres:
    """The PostgreSQL cluster devicelab manages (see the module docstring for its lifecycle)."""

    def __init__(self, state_dir: Path | None = None, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.major = self._major_version()
        self.base = (state_dir or state_root()) / f"pg{self.major}"
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.as_root = os.geteuid() == 0

    # ------------------------------------------------------------------ info
    def _major_version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "pg_ctl"), "--version"], capture_output=True, text=True, check=False
        ).stdout
        match = re.search(r"(\d+)(?:\.\d+)?", out)
        return match.group(1) if match else "x"

    def initialized(self) -> bool:
        """Whether the cluster has been created (initdb ran)."""
        return (self.data / "PG_VERSION").exists()

    def port(self) -> int:
        """The port written in the cluster's postgresql.conf. Raises BackendUnavailable."""
        conf = self._read_conf()
        match = re.search(rf"{re.escape(_CONF_BEGIN)}.*?^port = (\d+)", conf, re.S | re.M)
        if not match:
            raise BackendUnavailable(
                f"managed PostgreSQL at {self.data} has no port setting",
                hint=f"remove {self.base} to recreate it",
            )
        return int(match.group(1))

    def dsn(self, dbname: str = DATABASE, *, tcp: bool = False) -> str:
        """A libpq DSN of the cluster: the unix socket (no password) or, with ``tcp``,
        127.0.0.1 with the stored password."""
        if tcp:
            password = (self.base / "password").read_text().strip()
            return f"postgresql://postgres:{password}@127.0.0.1:{self.port()}/{dbname}"
        return f"host={self.data} port={self.port()} user=postgres dbname={dbname}"

    def url(self, dbname: str = DATABASE) -> str:
        """The URL of :meth:`dsn` (the unix socket devicelab uses; no secret), as results
        write it: ``postgresql://postgres@/devicelab?host=<data>&port=<port>``."""
        from backend_checks.backend_info import database_url

        dsn = self.dsn(dbname)
        return database_url(dsn) or dsn  # our own DSN always parses; it holds no password

    def running(self) -> bool:
        """Whether the server of this cluster is up."""
        if not self.initialized():
            return False
        result = self._run([str(self.bindir / "pg_ctl"), "status", "-D", str(self.data)])
        return result.returncode == 0

    # ------------------------------------------------------------------ lifecycle
    def ensure(self, dbname: str = DATABASE) -> str:
        """Create the cluster once, start it if stopped and create ``dbname``.

        Returns the DSN (unix socket). Raises ToolMissing, BackendUnavailable.
        """
        with self._lock():
            if not self.initialized():
                self._initdb()
            if not self.running():
                self._start()
            self._create_database(dbname)
        return self.dsn(dbname)

    def stop(self) -> bool:
        """Stop the server (fast shutdown). Returns True if it was running."""
        if not self.data.is_dir():  # never made here: nothing to stop, nothing to create
            return False
        with self._lock():
            if not self.running():
                return False
            result = self._run(
                [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"]
            )
            if result.returncode != 0:
                raise BackendUnavailable(
                    f"pg_ctl stop failed: {result.stderr.strip() or result.stdout.strip()}",
                    hint=f"see {self.log}",
                )
            return True

    # ------------------------------------------------------------------ steps
    def _initdb(self) -> None:
        self._prepare_dirs()
        self._remove_stale_builds()
        if self.data.exists() and any(self.data.iterdir()):
            # Not ours to delete: it may hold a user's data (initdb would refuse it too).
            raise BackendUnavailable(
                f"managed PostgreSQL at {self.data} is no cluster (no PG_VERSION)",
                hint=f"remove {self.base} to recreate it",
            )
        password = secrets.token_urlsafe(24)
        pwfile = self.base / "password"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        building = self.base / f"{_BUILDING}{os.getpid()}-{secrets.token_hex(4)}"
        cmd = [
            str(self.bindir / "initdb"),
            "-D",
            str(building),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            f"--pwfile={pwfile}",
        ]
        try:
            result = self._run(cmd, own_group=True)
            if result.returncode != 0:
                raise BackendUnavailable(
                    f"initdb failed: {result.stderr.strip().splitlines()[-1:] or result.stdout}",
                    hint=f"remove {self.base} and retry; see the initdb output above",
                )
            self._write_settings(free_port(), building)
            if self.data.exists():
                self.data.rmdir()  # empty (checked above): rename would not replace it
            building.rename(self.data)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise

    def _remove_stale_builds(self) -> None:
        """Remove the ``data.new-*`` folders of earlier creations that never finished (we
        hold the lock: none is being built by a live devicelab)."""
        for stale in self.base.glob(f"{_BUILDING}*"):
            shutil.rmtree(stale, ignore_errors=True)

    def _start(self) -> None:
        port = self.port()
        if not _port_free(port):
            port = free_port()  # someone else took ours since the last run
            self._write_settings(port)
        cmd = [
            str(self.bindir / "pg_ctl"),
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
        ]
        before = self.log.stat().st_size if self.log.exists() else 0
        result = self._run(cmd)
        if result.returncode != 0 and "Address already in use" in self._log_since(before):
            # Taken between the check above and the server's bind (one of the machine's
            # other programs, or another state folder's cluster picking the same port).
            self._write_settings(free_port())
            result = self._run(cmd)
        if result.returncode != 0:
            tail = self._log_tail()
            raise BackendUnavailable(
                f"managed PostgreSQL did not start: {tail or result.stderr.strip()}",
                hint=f"see {self.log}",
            )

    def _create_database(self, dbname: str) -> None:
        import psycopg

        try:
            with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{dbname}"')
        except psycopg.Error as exc:
            raise BackendUnavailable(
                f"managed PostgreSQL: cannot create database {dbname}: {exc}".splitlines()[0],
                hint=f"see {self.log}",
            ) from exc

    def _write_settings(self, port: int, data: Path | None = None) -> None:
        """Write our settings into the postgresql.conf of ``data`` (default: the cluster's;
        a cluster being built is the other one). The socket is in the final data folder."""
        data = data or self.data
        conf = (data / "postgresql.conf").read_text()
        conf = conf.split(_CONF_BEGIN)[0].rstrip("\n") + "\n"
        # Scratch cluster tuned for bulk loads: wal_level=minimal skips WAL for tables
        # created and loaded in one transaction; max_wal_size avoids checkpoints mid-load.
        settings = f"""
{_CONF_BEGIN}
port = {port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.data}'
shared_preload_libraries = 'pg_stat_statements,auto_explain'
pg_stat_statements.track = all
pg_stat_statements.max = 10000
track_io_timing = on
shared_buffers = 256MB
maintenance_work_mem = 512MB
work_mem = 16MB
wal_level = minimal
max_wal_senders = 0
max_wal_size = 4GB
synchronous_commit = off
max_connections = 1100
"""
        # Written aside and renamed in: port() and dsn() read it without the lock, and a
        # half-written file "has no port setting" (whose hint is to remove the cluster).
        path = data / "postgresql.conf"
        aside = path.with_name(f".{path.name}.{os.getpid()}")
        aside.write_text(conf + settings)
        aside.chmod(path.stat().st_mode & 0o777)
        self._chown(aside)
        aside.replace(path)

    # ------------------------------------------------------------------ plumbing
    def _read_conf(self) -> str:
        return (self.data / "postgresql.conf").read_text()

    def _prepare_dirs(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o700)
        self._chown(self.base)
        if self.as_root:
            probe = subprocess.run(
                ["runuser", "-u", "postgres", "--", "test", "-w", str(self.base)],
                capture_output=True,
                check=False,
            )
            if probe.returncode != 0:
                raise BackendUnavailable(
                    f"the postgres user cannot reach {self.base}",
                    hint="set DEVICELAB_STATE to a directory every user can traverse",
                )

    def _chown(self, path: Path) -> None:
        if self.as_root:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ToolMissing(
                    "the postgres system user", hint=f"{INSTALL_HINT} (it creates the user)"
                ) from exc
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, cmd: list[str], *, own_group: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a server command (as ``postgres`` when we are root); returns its result.
        With ``own_group`` it runs in a process group of its own that is killed whole when
        we are interrupted (or time out): killing runuser alone would orphan its child.
        Raises subprocess.TimeoutExpired after 180 s."""
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        if not own_group:
            return subprocess.run(
                cmd, capture_output=True, text=True, check=False, cwd="/", env=env, timeout=180
            )
        with subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
            env=env,
            start_new_session=True,
        ) as process:
            try:
                out, err = process.communicate(timeout=180)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise
        return subprocess.CompletedProcess(cmd, process.returncode, out, err)

    def _log_since(self, offset: int) -> str:
        """The server log written after byte ``offset`` ("" when it cannot be read)."""
        try:
            with self.log.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        errors = [line for line in lines if "FATAL" in line or "ERROR" in line]
        return (errors or lines or [""])[-1]

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        root = self.base.parent
        try:
            root.mkdir(parents=True, exist_ok=True)
            if self.as_root:
                root.chmod(root.stat().st_mode | 0o011)  # postgres must traverse it
            handle = (root / f"pg{self.major}.lock").open("w")
        except OSError as exc:
            # The cluster's own default, for this user (the journal's is another folder).
            default = (
                "/var/lib/devicelab" if self.as_root else Path.home() / ".local/share/devicelab"
            )
            raise EnvironmentProblem(
                f"cannot use the devicelab state folder {root}: {exc.strerror or exc}",
                hint=f"set DEVICELAB_STATE to a folder you can write (the cluster's default,"
                f" when it is unset: {default})",
            ) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
