"""The certificate files a ShapedProxy needs, checked before it starts: the upstream CA
servers are verified against, and mitmproxy's confdir, where it keeps its own CA.

A wrong one was found only once traffic flowed: a non-PEM upstream CA made every HTTPS
request a 502 (with a traceback), and a confdir mitmproxy cannot write left the proxy
listening without a CA, every HTTPS connection closed.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import tempfile
from pathlib import Path

from devicelab.errors import BadInput, EnvironmentProblem, first_line
from devicelab.files import locked_folder, write_private

log = logging.getLogger(__name__)

__all__ = [
    "CA_CERT_NAME",
    "HeldErrors",
    "check_confdir",
    "ensure_ca",
    "missing_ca",
    "upstream_ca",
]

# What mitmproxy writes in its confdir: its CA (key and certificate), and the certificate
# alone, which devices install.
CA_CERT_NAME = "mitmproxy-ca-cert.pem"
_CA_KEY_NAME = "mitmproxy-ca.pem"
_DHPARAM_NAME = "mitmproxy-dhparam.pem"
_CONFDIR_HINT = "set confdir= (--confdir) to a writable directory, or HOME to a home directory"


def upstream_ca(given: str | os.PathLike[str] | None) -> str | None:
    """The PEM file servers are verified against: ``given``, else $SSL_CERT_FILE when it
    names a file, else None (certifi's bundle). Raises BadInput when ``given`` is not a
    file, or the file (given or $SSL_CERT_FILE's) holds no PEM certificate."""
    if given is not None:
        hint = "give a PEM file of the CA that signed the test servers' certificates"
        if not os.fspath(given):
            raise BadInput("upstream CA '': an empty path", hint=hint)
        path = Path(given).expanduser()
        if not path.exists():
            raise BadInput(f"upstream CA {path}: no such file", hint=hint)
        if path.is_dir():
            raise BadInput(f"upstream CA {path}: a directory, not a file", hint=hint)
        if not path.is_file():  # /dev/null, a pipe
            raise BadInput(f"upstream CA {path}: not a regular file", hint=hint)
        _check_pem(f"upstream CA {path}", path, hint)
        return str(path)
    env = os.environ.get("SSL_CERT_FILE")
    if not env or not Path(env).is_file():
        return None  # as OpenSSL does: it reads it only when it names a file
    hint = (
        "point it at a PEM file of the CA that signed the test servers' certificates, or unset it"
    )
    _check_pem(f"$SSL_CERT_FILE {env}", Path(env), hint)
    return env


def _check_pem(what: str, path: Path, hint: str) -> None:
    """Raise BadInput unless OpenSSL (as mitmproxy will) loads a CA certificate from ``path``."""
    try:
        if path.stat().st_size == 0:
            raise BadInput(f"{what}: the file is empty", hint=hint)
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:  # before OSError: it is one
        why = (exc.reason or first_line(exc)).lower().replace("_", " ")
        raise BadInput(f"{what}: not a PEM certificate file ({why})", hint=hint) from None
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
        raise BadInput(f"{what}: cannot read it ({why.lower()})", hint=hint) from None


def check_confdir(confdir: Path) -> None:
    """Make ``confdir`` (mitmproxy keeps its CA there) unless it exists. Raises
    EnvironmentProblem when it cannot be a directory, or mitmproxy could not write its CA
    there (a read-only directory without one)."""
    try:
        confdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # The nearest path that exists says why: a file where a directory should be (HOME
        # set to a file), or a directory we may not write in.
        there = next((p for p in (confdir, *confdir.parents) if p.exists()), confdir)
        why = (exc.strerror or first_line(exc)).lower()
        why = f"{there} is not a directory" if not there.is_dir() else why
        raise EnvironmentProblem(
            f"cannot use {confdir} as mitmproxy's confdir: {why}", hint=_CONFDIR_HINT
        ) from None
    if not (confdir / _CA_KEY_NAME).is_file() and not os.access(confdir, os.W_OK | os.X_OK):
        raise EnvironmentProblem(
            f"cannot use {confdir} as mitmproxy's confdir: it is not writable and holds no CA",
            hint=_CONFDIR_HINT,
        )


def ensure_ca(confdir: Path) -> None:
    """Make mitmproxy's CA in ``confdir`` (an existing directory) unless its key file is
    there, as mitmproxy would, but one process at a time and whole: the files are written
    aside and renamed in, the key last. Proxies starting together on a fresh confdir (a
    battery farm's runs, each a subprocess) each made a CA, one truncating the file
    another was reading: "Unable to load PEM file ... MalformedFraming", a phone's run
    lost. A CA already there (mitmproxy's own, the one devices trust) is never replaced.
    Raises EnvironmentProblem when the CA cannot be written."""
    key, dhparam = confdir / _CA_KEY_NAME, confdir / _DHPARAM_NAME
    if key.exists() and dhparam.exists():
        return  # a directory there is mitmproxy's to refuse, with its own words
    try:
        with locked_folder(confdir):  # the other maker is done within a second
            if not key.exists():
                _make_ca(confdir)
            elif not dhparam.exists():
                _write_dhparam(confdir)
    except OSError as exc:  # the folder could not be opened
        raise _no_ca(confdir, exc) from None


def _write_dhparam(confdir: Path) -> None:
    """Put mitmproxy's default DH parameters in a confdir whose CA has none (an older
    mitmproxy's), as mitmproxy would at its start, but whole: mitmproxy writes the file in
    place, and another proxy starting meanwhile read it empty. A confdir we may not write
    is left to mitmproxy, which says so."""
    from mitmproxy.certs import DEFAULT_DHPARAM

    try:
        write_private(confdir / _DHPARAM_NAME, DEFAULT_DHPARAM.decode("ascii"))
    except OSError as exc:
        log.info("could not write mitmproxy's DH parameters in %s: %s", confdir, exc)


def _make_ca(confdir: Path) -> None:
    from mitmproxy.certs import CertStore
    from mitmproxy.options import CONF_BASENAME, KEY_SIZE

    try:
        aside = Path(tempfile.mkdtemp(prefix=".devicelab-ca-", dir=confdir))
    except OSError as exc:
        raise _no_ca(confdir, exc) from None
    try:
        CertStore.create_store(aside, CONF_BASENAME, KEY_SIZE)
        # mitmproxy takes the key file for the whole CA: it goes in last.
        for made in sorted(aside.iterdir(), key=lambda path: path.name == _CA_KEY_NAME):
            made.replace(confdir / made.name)
    except OSError as exc:
        raise _no_ca(confdir, exc) from None
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    log.info("made mitmproxy's CA in %s", confdir)


def _no_ca(confdir: Path, exc: OSError) -> EnvironmentProblem:
    why = (exc.strerror or first_line(exc)).lower()
    return EnvironmentProblem(
        f"mitmproxy has no CA in its confdir {confdir}: {why}", hint=_CONFDIR_HINT
    )


class HeldErrors(logging.Filter):
    """Holds back the error records of a logger (mitmproxy's "Addon error" with its
    traceback) while options are applied: one about the CA becomes our one-line error, the
    others are logged after all (``release``)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        """Returns True (log it) for a record below ERROR; holds an ERROR or worse and
        returns False. Never raises."""
        if record.levelno < logging.ERROR:
            return True
        self.held.append(record)
        return False

    def release(self, logger: logging.Logger) -> None:
        """Log the held records on ``logger`` (this filter taken off it first)."""
        logger.removeFilter(self)
        for record in self.held:
            logger.handle(record)


def missing_ca(tlsconfig: object, confdir: Path, held: HeldErrors) -> EnvironmentProblem | None:
    """The error to raise when mitmproxy's ``tlsconfig`` addon has no CA (it could not make
    or load it in ``confdir``: HTTPS could not be intercepted), else None. ``held``: the
    errors logged meanwhile, the first of which says why."""
    if getattr(tlsconfig, "certstore", None) is not None and (confdir / CA_CERT_NAME).is_file():
        return None
    why = held.held[0].getMessage().removeprefix("Addon error: ") if held.held else ""
    why = why.strip().splitlines()[0] if why.strip() else f"no {CA_CERT_NAME} there"
    return EnvironmentProblem(
        f"mitmproxy has no CA in its confdir {confdir}: {why}", hint=_CONFDIR_HINT
    )
