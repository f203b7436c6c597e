"""``devicelab proxy``: a shaping proxy in the foreground, and its self-check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from devicelab.models.network import NetworkProfile
    from devicelab.netshape.selfcheck import SelfCheck

__all__ = ["register"]

_ALLOW_DEFAULT = ["127.0.0.0/8", "::1/128"]


def register(app: typer.Typer) -> None:
    """Add ``proxy`` (foreground proxy) and ``proxy check`` to ``app``."""
    proxy_app = typer.Typer(
        help="Run a network-shaping proxy in the foreground (prints 'listening on HOST:PORT'); "
        "`check` measures what it achieves.",
        invoke_without_command=True,
    )
    app.add_typer(proxy_app, name="proxy")

    @proxy_app.callback()
    def proxy_command(
        ctx: typer.Context,
        network: Annotated[str, typer.Option("--network", help="network profile id")] = "none",
        listen: Annotated[
            str, typer.Option("--listen", help="HOST:PORT to listen on (port 0: any free port)")
        ] = "127.0.0.1:8080",
        allow: Annotated[
            list[str] | None,
            typer.Option(
                "--allow",
                help="client network allowed (CIDR, e.g. 192.168.1.0/24, or one address); "
                "repeat for several (no comma lists); default loopback",
            ),
        ] = None,
        no_verify_upstream: Annotated[
            bool,
            typer.Option(
                "--no-verify-upstream",
                help="accept any certificate from HTTPS servers (a test backend's self-signed "
                "one on the LAN; servers on this machine's loopback are never verified)",
            ),
        ] = False,
        upstream_ca: Annotated[
            Path | None,
            typer.Option(
                "--upstream-ca",
                help="PEM file of the CA that signed your HTTPS test servers' certificates "
                "(default: $SSL_CERT_FILE, else the public CAs)",
            ),
        ] = None,
        no_http2: Annotated[
            bool,
            typer.Option(
                "--no-http2",
                help="HTTP/1.1 only: each request of a device on its own connection, shared "
                "fairly (over HTTP/2 they queue behind each other in one connection)",
            ),
        ] = False,
    ) -> None:
        """Run a shaping proxy in the foreground until Ctrl-C; prints 'listening on HOST:PORT'."""
        if ctx.invoked_subcommand is not None:
            _refuse_options_before(ctx)
            return
        import logging

        from devicelab.config import load_networks, network_profile
        from devicelab.netshape.serve import parse_allow, parse_listen, run_foreground

        logging.basicConfig(level=logging.WARNING, format="devicelab proxy: %(message)s")
        logging.getLogger("devicelab.netshape").setLevel(logging.INFO)
        address, clients = parse_listen(listen), parse_allow(allow or _ALLOW_DEFAULT)
        catalog = load_networks()
        profile = network_profile(network, catalog)
        code = run_foreground(
            profile,
            listen=address,
            allow=clients,
            echo=typer.echo,
            verify_upstream=not no_verify_upstream,
            upstream_ca=upstream_ca,
            http2=not no_http2,
            networks=catalog.profiles,
        )
        raise typer.Exit(code)

    @proxy_app.command("check")
    def check_command(
        network: Annotated[str, typer.Option("--network", help="network profile id")],
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Measure achieved RTT, downlink and uplink through the proxy vs the profile.

        Exit 1 when the link is off its profile beyond the self-check's tolerance.
        """
        from devicelab.config import network_profile
        from devicelab.netshape.selfcheck import self_check

        profile = network_profile(network)
        check = self_check(profile)
        _print_check(profile, check, as_json=as_json)
        raise typer.Exit(1 if check.off else 0)


def _refuse_options_before(ctx: typer.Context) -> None:
    """Raise BadInput when options of the foreground proxy come before a subcommand
    (``proxy --network 4g check``): check said "Missing option '--network'", or ignored
    ``--listen`` and measured on a proxy of its own."""
    from devicelab.errors import BadInput

    def typed(name: str | None) -> bool:
        source = ctx.get_parameter_source(name) if name else None
        return source is not None and source.name == "COMMANDLINE"

    given = [param.opts[0] for param in ctx.command.params if typed(param.name)]
    if given:
        sub = ctx.invoked_subcommand
        raise BadInput(
            f"{', '.join(given)} before `{sub}`: those are the foreground proxy's options",
            hint=f"put {sub}'s options after it: devicelab proxy {sub} --network NAME [--json]",
        )


def _print_check(profile: NetworkProfile, check: SelfCheck, *, as_json: bool) -> None:
    from devicelab.netshape.selfcheck import RTT_METHOD, loss_bound_kbps

    info, bound = check.network, loss_bound_kbps(profile)
    if not as_json:
        _print_check_text(profile, check, bound)
        return
    figures = {"rtt_ms": info.rtt_ms, "down_kbps": info.down_kbps, "up_kbps": info.up_kbps}
    figures |= {"loss_pct": info.loss_pct, "jitter_ms": info.jitter_ms}
    out = {"network": info.name, "profile": figures, "rtt_method": RTT_METHOD}
    if bound is not None:
        out["loss_bound"] = {"down_kbps": bound[0], "up_kbps": bound[1]}
    out |= {"achieved": check.achieved.model_dump(), "verdict": check.verdict, "off": check.off}
    typer.echo(json.dumps(out, indent=2))


def _print_check_text(
    profile: NetworkProfile, check: SelfCheck, bound: tuple[float | None, float | None] | None
) -> None:
    from devicelab.netshape.selfcheck import RTT_METHOD

    info, achieved = check.network, check.achieved
    typer.echo(f"network {info.name} ({profile.label}); source: {profile.source}")
    typer.echo(f"{'':10} {'profile':>12} {'achieved':>12} {'error':>8}")
    for name, want, got in (
        ("rtt_ms", info.rtt_ms, achieved.rtt_ms),
        ("down_kbps", info.down_kbps, achieved.down_kbps),
        ("up_kbps", info.up_kbps, achieved.up_kbps),
    ):
        error = f"{(got - want) / want * 100:+.1f}%" if want and got is not None else "-"
        # No figure in the profile: no delay added (rtt) or no limit (bandwidth).
        none = "none added" if name == "rtt_ms" else "unlimited"
        wanted = none if want is None else _fmt(want)
        typer.echo(f"{name:10} {wanted:>12} {_fmt(got):>12} {error:>8}")
    typer.echo(f"rtt: {RTT_METHOD}")
    if bound is not None:
        typer.echo(
            f"loss {profile.loss_pct:g} %: each lost segment is sent again a round trip "
            f"later, so a transfer moves about {_fmt(bound[0])} kbps down and "
            f"{_fmt(bound[1])} kbps up on this link (docs/netshape.md, Loss); "
            "rates are not judged"
        )
    if check.verdict == "skip":
        typer.echo("verdict: skip (no shaping: nothing to hold the link to)")
    elif check.off:
        typer.echo("verdict: FAIL, the link is off its profile:")
        for line in check.off:
            typer.echo(f"  {line}")
    else:
        typer.echo("verdict: pass (within tolerance: docs/netshape.md, Self-check)")


def _fmt(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:,.1f}"
