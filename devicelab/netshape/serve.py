"""Run a shaped proxy in the foreground until SIGINT/SIGTERM.

``python -m devicelab.netshape.serve --profile-json JSON --listen HOST:PORT [--allow CIDR]``
is what ShapedProxy's subprocess mode starts; ``devicelab proxy`` calls ``run_foreground``.
The first line printed is ``listening on HOST:PORT``, once the port accepts connections.
"""

from __future__ import annotations

import argparse
import faulthandler
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import exceptions
from pydantic import ValidationError

from devicelab.errors import BadInput, DeviceLabError
from devicelab.models.network import NetworkProfile, profile_problem
from devicelab.netshape.addon import CONTROL_HOST, DEFAULT_ALLOW
from devicelab.netshape.listen import check_listen_host
from devicelab.netshape.options import allow_networks, parse_networks
from devicelab.netshape.proxy import DEFAULT_CONFDIR, ShapedProxy

__all__ = [
    "device_instructions",
    "main",
    "parse_allow",
    "parse_listen",
    "public_allowed",
    "run_foreground",
    "unreachable",
]

logger = logging.getLogger("devicelab.netshape")

# How long a clean stop may take once SIGINT/SIGTERM came: it takes 0.4-0.7 s, 2-3 s on a
# heavily loaded machine.
_STOP_GRACE_S = 10.0


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port). Raises BadInput when it is
    not HOST:PORT (a bracket without its pair too), when an IPv6 HOST has no brackets
    ("::1:80": ambiguous), when HOST is no IP address and no name that resolves, or when
    it is none of this machine's addresses (``check_listen_host``)."""
    host, sep, port = text.strip().rpartition(":")
    # "[::1]" is ::1; "[::1" (its "]" lost) is no host, not ::1.
    inner = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
    bad_host = any(c.isspace() or c in "[]" for c in inner) or bool(host and not inner)
    if not sep or bad_host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BadInput(f"--listen {text!r} is not HOST:PORT", hint="e.g. 127.0.0.1:8080")
    if ":" in host and host == inner:  # "::1:80" is ::1 port 80 or the address ::1:80
        raise BadInput(
            f"--listen {text.strip()!r} is ambiguous: an IPv6 address takes brackets",
            hint=f"e.g. [{host}]:{port} (or [{host}:{port}]:PORT for the address {host}:{port})",
        )
    host = inner or "127.0.0.1"
    check_listen_host(host, named=f"--listen {text.strip()!r}", address=text.strip())
    return host, int(port)


def parse_allow(entries: Sequence[str]) -> list[str]:
    """The networks of ``--allow`` (each a CIDR or one address) as given; raises BadInput
    naming ``--allow`` when one is no network, holds several (repeat --allow instead), or
    has host bits set (10.0.0.1/8: say 10.0.0.0/8 or 10.0.0.1/32; ``allow_networks``)."""
    for entry in entries:
        if "," in entry:
            separate = " ".join(f"--allow {part.strip()}" for part in entry.split(",") if part)
            raise BadInput(
                f"--allow {entry!r} holds several networks",
                hint=f"repeat --allow, one network each: {separate}",
            )
    allow_networks(entries, name="--allow", say="--allow ")
    return [entry.strip() for entry in entries]


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def unreachable(host: str, allow: Sequence[str]) -> str | None:
    """Why no allowed client can reach a proxy listening on ``host``, or None: a loopback
    address takes only this machine's clients, and those of its own family (127.0.0.1 to
    an IPv4 listener, ::1 to an IPv6 one), which ``allow`` may leave out; an address of
    one family takes no client of the other."""
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in allow]
    if _is_loopback(host):
        if _allows_loopback(allow, host):
            return None
        clients = _local_clients(host)
        # The other family's loopback allowed: say which one is missing.
        which = f"IPv{clients[0].version} " if _allows_loopback(allow, "localhost") else ""
        wanted = " or ".join(_LOOPBACK_CIDR[client.version] for client in clients)
        return (
            f"no allowed client can reach this proxy: it listens on {host} (loopback, its"
            f" clients come from {' or '.join(map(str, clients))}) and --allow"
            f" {' '.join(allow)} leaves {which}loopback out; listen on a LAN address"
            f" (--listen 0.0.0.0:PORT) or allow {wanted}"
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name: its family is not known here
        return None
    # "::" too takes IPv6 clients only: asyncio's listener sets IPV6_V6ONLY.
    if any(n.version == address.version for n in networks):
        return None
    return (
        f"no allowed client can reach this proxy: it listens on {host} (IPv{address.version})"
        f" and --allow {' '.join(allow)} names only IPv{10 - address.version} networks;"
        f" allow your lab's IPv{address.version} network"
    )


#: The loopback network of each IP version, as --allow takes it.
_LOOPBACK_CIDR = {4: "127.0.0.0/8", 6: "::1/128"}


def _local_clients(host: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """The addresses a client on this machine comes from when it connects to the loopback
    listener ``host`` ("localhost" listens on both)."""
    v4, v6 = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")
    if host == "localhost":
        return (v4, v6)
    return (v4,) if ipaddress.ip_address(host).version == 4 else (v6,)


#: Addresses of the internet: an allowed network holding one lets the internet in.
_PUBLIC_SAMPLES = tuple(
    ipaddress.ip_address(a) for a in ("1.1.1.1", "8.8.8.8", "2606:4700:4700::1111")
)


def public_allowed(allow: Sequence[str]) -> list[str]:
    """The networks of ``allow`` that hold public (internet) addresses."""
    wide = []
    for cidr in allow:
        network = ipaddress.ip_network(cidr, strict=False)
        ends = (network.network_address, network.broadcast_address)
        if any(a.is_global for a in ends) or any(a in network for a in _PUBLIC_SAMPLES):
            wide.append(cidr)
    return wide


def device_instructions(proxy: ShapedProxy) -> list[str]:
    """Lines telling a user how to point each kind of device at ``proxy`` (only the
    allow-list when no allowed client can reach it, see ``unreachable``)."""
    port = proxy.port
    if unreachable(proxy.host, proxy.allow) is not None:
        return [f"  allowed clients: {', '.join(proxy.allow)} (none can reach {proxy.host})"]
    lan = proxy.host in ("0.0.0.0", "::")
    host = "<this machine's LAN address>" if lan else proxy.host
    if _is_loopback(proxy.host):  # a phone on Wi-Fi cannot reach this machine's loopback
        ios = (
            f"a phone cannot reach {proxy.host}: listen on a LAN address (--listen "
            f"0.0.0.0:{port} --allow <the phone's network CIDR>), then Wi-Fi > (i) > "
            f"Configure Proxy > Manual: <this machine's LAN address> port {port}"
        )
    else:
        ios = f"Wi-Fi > (i) > Configure Proxy > Manual: {host} port {port}"
    if lan and not _allows_loopback(proxy.allow, proxy.host):
        # Playwright here and adb reverse connect from loopback, which --allow leaves out.
        loopback = "::1/128" if proxy.host == "::" else "127.0.0.1/32"
        lines = [
            f"  web (Playwright): from an allowed machine, proxy={{'server': "
            f"'http://{host}:{port}'}} (this machine's own loopback is not in --allow: add"
            f" --allow {loopback} to run it here)",
            "  android (USB):    adb reverse connects from loopback, which --allow leaves"
            f" out: add --allow {loopback}, or set the phone's Wi-Fi proxy to {host}"
            f" port {port}",
        ]
    else:
        lines = [
            f"  web (Playwright): proxy={{'server': '{proxy.url}'}}",
            f"  android (USB):    adb reverse tcp:{port} tcp:{port} && "
            f"adb shell settings put global http_proxy 127.0.0.1:{port}",
            "                    undo: adb shell settings put global http_proxy :0 && "
            f"adb reverse --remove tcp:{port}",
        ]
    lines += [
        f"  ios:              {ios}",
        f"  HTTPS: install the CA certificate {proxy.ca_cert_path}"
        " (or browse to http://mitm.it through the proxy)",
        f"  allowed clients: {', '.join(proxy.allow)}",
    ]
    if proxy.networks:
        # The control endpoint is reached through the proxy, so from an allowed address.
        local = _allows_loopback(proxy.allow, proxy.host)
        via = proxy.url if local else f"http://{host}:{port}"
        where = "" if local else " (from an allowed address)"
        lines.append(
            f"  switch without a restart{where}: curl -x {via} -d slow-3g"
            f" http://{CONTROL_HOST}/profile (or POST .../offline?seconds=N, .../online)"
        )
    if proxy.host == "::":
        lines.append(
            f"  (:: takes IPv6 clients only: for IPv4 devices and adb reverse, --listen"
            f" 0.0.0.0:{port})"
        )
    if lan and set(proxy.allow) <= set(DEFAULT_ALLOW):
        lines.append("  (only loopback may connect: add --allow <your LAN's CIDR> for devices)")
    return lines


def run_foreground(
    profile: NetworkProfile | None,
    *,
    listen: tuple[str, int] = ("127.0.0.1", 8080),
    allow: Sequence[str] = DEFAULT_ALLOW,
    confdir: str = DEFAULT_CONFDIR,
    echo: Callable[[str], None] = print,
    instructions: bool = True,
    control_stdio: bool = False,
    **proxy_options: Any,
) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit code (0 after a clean stop).

    ``proxy_options`` go to ShapedProxy (``ws_history``, ``verify_upstream``,
    ``upstream_ca``, ``http2``). ``control_stdio``: take commands on stdin, one JSON
    object a line, and answer each on stdout (ShapedProxy's subprocess mode).

    Raises EnvironmentProblem when the proxy cannot listen; BadInput on a bad option.
    """
    # The handler takes no lock: it runs in the main thread between two of its steps,
    # perhaps while that thread holds the very lock (an Event's, as it begins to wait),
    # and the process would then wait for itself forever.
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    stopped = threading.Event()
    try:
        with ShapedProxy(
            profile, host=listen[0], port=listen[1], allow=allow, confdir=confdir, **proxy_options
        ) as p:
            host = f"[{p.host}]" if ":" in p.host else p.host  # an IPv6 address
            echo(f"listening on {host}:{p.port}")
            if (why := unreachable(p.host, p.allow)) is not None:
                logger.warning("%s", why)
            if (wide := public_allowed(p.allow)) and not _is_loopback(p.host):
                logger.warning(
                    "--allow %s lets addresses of the internet use this proxy (an open "
                    "proxy, if this machine is reachable): allow your lab's network only, "
                    "e.g. --allow 192.168.1.0/24",
                    " ".join(wide),
                )
            if instructions:
                name = profile.id or profile.label if profile else "none"
                echo(f"network {name}; point a device at it:")
                for line in device_instructions(p):
                    echo(line)
            sys.stdout.flush()
            if control_stdio:
                threading.Thread(
                    target=_serve_commands, args=(p,), name="netshape-control", daemon=True
                ).start()
            while not received:
                time.sleep(0.1)
            _exit_if_stop_hangs(_STOP_GRACE_S, stopped)
    finally:
        stopped.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _exit_if_stop_hangs(grace_s: float, stopped: threading.Event) -> None:
    """Exit with 3 when the clean stop that begins now has not ``stopped`` within
    ``grace_s`` seconds (a proxy asked to stop must stop, or a script waiting for it, or
    the port, waits forever); the threads' stacks go to stderr first, to say what held it."""

    def say() -> None:
        logger.error(
            "the proxy did not stop within %g s of the signal: exiting now (the stacks of "
            "its threads follow)",
            grace_s,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)

    def watch() -> None:
        if stopped.wait(grace_s):
            return
        # A stderr pipe nobody reads would block the telling, and the exit with it.
        teller = threading.Thread(target=say, name="netshape-stop-tell", daemon=True)
        teller.start()
        teller.join(2.0)
        os._exit(3)

    threading.Thread(target=watch, name="netshape-stop-watch", daemon=True).start()


def _allows_loopback(allow: Sequence[str], host: str) -> bool:
    """Whether a client on this machine may use a proxy listening on ``host``, reaching
    it as ``ShapedProxy.url`` does (0.0.0.0 on 127.0.0.1, :: on ::1)."""
    reached = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    # A LAN address: its local clients' address is not loopback; either one counts here.
    clients = _local_clients(reached if _is_loopback(reached) else "localhost")
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in allow]
    return any(client in network for client in clients for network in networks)


def _serve_commands(proxy: ShapedProxy) -> None:
    """Answer the commands of the process that started us, one JSON line each way:
    ``{"op": "profile", "profile": JSON or ""}``, ``{"op": "offline", "seconds": N or
    null}``, ``{"op": "online"}``, ``{"op": "status"}``, ``{"op": "records"}`` ->
    ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``."""
    for line in sys.stdin:
        try:
            command = json.loads(line)
            op = command.get("op")
            result: Any = None
            if op == "profile":
                text = command.get("profile") or ""
                proxy.set_profile(NetworkProfile.model_validate_json(text) if text else None)
            elif op == "offline":
                proxy.go_offline(command.get("seconds"))
            elif op == "online":
                proxy.go_online()
            elif op == "status":
                result = proxy.status().model_dump(mode="json")
            elif op == "records":
                result = [record.to_dict() for record in proxy.records()]
            else:
                raise ValueError(f"no command {op!r}")
            reply = {"ok": True, "result": result}
        except (DeviceLabError, ValueError) as exc:  # pydantic's errors are ValueErrors
            reply = {"ok": False, "error": str(exc).strip().splitlines()[0]}
        print(json.dumps(reply), flush=True)


def _exit_with_parent(pid: int, interval_s: float = 0.5) -> None:
    """Stop this proxy (SIGTERM to itself: a clean stop) once process ``pid``, the one
    that started it, is gone: a parent killed outright (SIGKILL, a crash) cannot stop us,
    and an orphaned proxy would keep its port and its devices' route."""

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="devicelab-parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m devicelab.netshape.serve``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m devicelab.netshape.serve")
    parser.add_argument("--profile-json", default="", help="NetworkProfile JSON ('' = none)")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--allow", action="append", default=None)
    parser.add_argument("--confdir", default=DEFAULT_CONFDIR)
    parser.add_argument("--ws-history", type=int, default=200)
    parser.add_argument("--no-verify-upstream", action="store_true")
    parser.add_argument("--upstream-ca", default=None, help="PEM file of the servers' CA")
    parser.add_argument("--no-http2", action="store_true", help="HTTP/1.1 only")
    parser.add_argument("--alias", action="append", default=[], help="NAME=HOST")
    parser.add_argument("--networks-json", default="", help="named profiles (JSON object)")
    parser.add_argument("--parent-pid", type=int, default=0, help="stop when it is gone")
    parser.add_argument("--control-stdio", action="store_true", help="commands on stdin")
    args = parser.parse_args(argv)
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    # "netshape: LEVEL message": ShapedProxy logs each line again at its level.
    logging.basicConfig(level=logging.WARNING, format="netshape: %(levelname)s %(message)s")
    logging.getLogger("devicelab.netshape").setLevel(logging.INFO)
    try:
        profile = (
            NetworkProfile.model_validate_json(args.profile_json) if args.profile_json else None
        )
        return run_foreground(
            profile,
            listen=parse_listen(args.listen),
            allow=args.allow or DEFAULT_ALLOW,
            confdir=args.confdir,
            echo=lambda line: print(line, flush=True),
            instructions=False,
            control_stdio=args.control_stdio,
            ws_history=args.ws_history,
            verify_upstream=not args.no_verify_upstream,
            upstream_ca=args.upstream_ca,
            http2=not args.no_http2,
            aliases=dict(entry.partition("=")[::2] for entry in args.alias),
            networks=parse_networks(args.networks_json),
        )
    except DeviceLabError as exc:
        print(f"netshape: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, exceptions.OptionsError) as exc:
        # pydantic's text is a block ("1 validation error for NetworkProfile ..."): one line.
        text = profile_problem(exc) if isinstance(exc, ValidationError) else exc
        print(f"netshape: error: bad profile: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
