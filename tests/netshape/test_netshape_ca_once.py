"""mitmproxy's CA made once, whole, when proxies start together on a fresh confdir."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from mitmproxy.certs import CertStore

from devicelab.errors import EnvironmentProblem
from devicelab.netshape import ca
from tests.together import at_once


def test_proxies_starting_together_make_one_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A battery farm's runs started their proxies on one fresh confdir: each made a CA,
    # and one read the key file while another rewrote it (MalformedFraming, a phone lost).
    made: list[Path] = []
    create = CertStore.create_store

    def slow_create(path: Path, basename: str, key_size: int, *args: Any) -> None:
        made.append(path)
        time.sleep(0.3)  # the key generation another start may overlap
        create(path, basename, key_size, *args)

    monkeypatch.setattr(CertStore, "create_store", staticmethod(slow_create))
    assert at_once(lambda: ca.ensure_ca(tmp_path), 6, timeout_s=30) == []
    assert len(made) == 1
    # The certificate devices install is the CA's, whose key the proxy signs with.
    whole = (tmp_path / "mitmproxy-ca.pem").read_bytes()
    cert = x509.load_pem_x509_certificate((tmp_path / ca.CA_CERT_NAME).read_bytes())
    assert x509.load_pem_x509_certificate(whole) == cert
    key: Any = load_pem_private_key(whole, None)
    assert key.public_key() == cert.public_key()
    assert (tmp_path / "mitmproxy-ca.pem").stat().st_mode & 0o077 == 0  # the key stays private
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_ca_already_there_is_kept(tmp_path: Path) -> None:
    # The CA devices were told to trust: replacing it would break every one of them.
    CertStore.create_store(tmp_path, "mitmproxy", 2048)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    ca.ensure_ca(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_ca_that_cannot_be_written_is_an_environment_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CertStore, "create_store", staticmethod(full))
    with pytest.raises(EnvironmentProblem, match=f"no CA in its confdir {tmp_path}: no space"):
        ca.ensure_ca(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left


def test_a_ca_without_dh_parameters_gets_them_whole_and_keeps_its_key(tmp_path: Path) -> None:
    # An older mitmproxy's confdir: mitmproxy writes the file in place at its start, and a
    # proxy starting meanwhile read it empty.
    from mitmproxy.certs import DEFAULT_DHPARAM

    CertStore.create_store(tmp_path, "mitmproxy", 2048)
    (tmp_path / "mitmproxy-dhparam.pem").unlink()
    key = (tmp_path / "mitmproxy-ca.pem").read_bytes()
    assert at_once(lambda: ca.ensure_ca(tmp_path), 4, timeout_s=30) == []
    assert (tmp_path / "mitmproxy-dhparam.pem").read_bytes() == DEFAULT_DHPARAM
    assert (tmp_path / "mitmproxy-ca.pem").read_bytes() == key
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
