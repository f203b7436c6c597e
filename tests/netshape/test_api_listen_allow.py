"""ShapedProxy refuses the listen addresses and allow-lists ``devicelab proxy`` refuses,
with the same words and hint, as BadInput (exit 2) before anything starts: it used to
pass mitmproxy's "could not bind on any address out of [...]" on as an
EnvironmentProblem, and to take ``10.0.0.1/8`` as ``10.0.0.0/8`` without a word."""

from __future__ import annotations

import socket
from typing import Literal

import pytest

from devicelab.errors import BadInput
from devicelab.netshape.addon import NetShape
from devicelab.netshape.proxy import ShapedProxy

LISTEN_HINT = (
    "(hint: listen on an IP address of this machine (`ip addr`), 127.0.0.1 (this machine"
    " only), 0.0.0.0 (all its IPv4 addresses) or a name that resolves to one)"
)
HOST_BITS = (
    "'10.0.0.1/8' has host bits set (hint: for the network say 10.0.0.0/8; for that one"
    " address 10.0.0.1/32)"
)


def _refused(proxy: ShapedProxy) -> BadInput:
    try:
        with pytest.raises(BadInput) as caught:
            proxy.start()
    finally:
        proxy.stop()  # one that started after all must not outlive the test
    assert caught.value.exit_code == 2
    return caught.value


@pytest.mark.parametrize("mode", ["thread", "subprocess"])
@pytest.mark.parametrize(
    ("host", "said"),
    [
        # TEST-NET-1 (RFC 5737): an address, but none of this machine's.
        ("198.51.100.1", "cannot listen on 198.51.100.1:18470: not an address of this machine"),
        ("999.1.1.1", "cannot listen on 999.1.1.1:18470: 999.1.1.1 is not an IP address"),
        ("::1::2", "cannot listen on [::1::2]:18470: ::1::2 is not an IP address"),
    ],
)
def test_a_host_that_is_no_address_of_this_machine_is_bad_input_in_the_clis_words(
    host: str, said: str, mode: Literal["thread", "subprocess"]
) -> None:
    error = _refused(ShapedProxy(None, host=host, port=18470, mode=mode))
    assert error.one_line() == f"{said} {LISTEN_HINT}"


def test_a_host_name_that_does_not_resolve_is_bad_input_in_the_clis_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_such_name(*_args: object, **_kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)  # no DNS in a test
    error = _refused(ShapedProxy(None, host="nonexist.invalid", port=0))
    assert error.one_line() == (
        "cannot listen on nonexist.invalid:0: nonexist.invalid does not resolve (name or"
        f" service not known) {LISTEN_HINT}"
    )


@pytest.mark.parametrize("mode", ["thread", "subprocess"])
def test_an_allowed_network_with_host_bits_set_is_bad_input_with_both_readings(
    mode: Literal["thread", "subprocess"],
) -> None:
    proxy = ShapedProxy(None, allow=["127.0.0.0/8", "10.0.0.1/8"], mode=mode)
    assert _refused(proxy).one_line() == f"netshape_allow {HOST_BITS}"


@pytest.mark.filterwarnings(r"ignore::DeprecationWarning:ldap3(\.|$)")  # its imports
def test_the_allow_option_refuses_host_bits_in_the_same_words() -> None:
    # The addon's option, for mitmproxy run with the NetShape addon (mitmdump -s).
    from mitmproxy import exceptions
    from mitmproxy.test import taddons

    addon = NetShape()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError) as caught:
            tctx.configure(addon, netshape_allow=["10.0.0.1/8"])
        assert str(caught.value) == f"netshape_allow {HOST_BITS}"
        tctx.configure(addon, netshape_allow=["10.0.0.0/8", "10.0.0.1"])  # both readings
