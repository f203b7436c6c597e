"""``devicelab run``: one device, one network, the story's device checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from devicelab.models import Results

__all__ = ["register", "summary_lines"]


def summary_lines(results: Results) -> list[str]:
    """The printed summary of a run: the device and link, one line per check, the counts."""
    from devicelab.report import measured_text  # as the reports print them

    run = results.run
    lines = []
    if run.device is not None:
        lines.append(f"device: {run.device.id} ({run.device.model}, {run.device.os})")
    if run.network is not None:
        link = f"network: {run.network.name}"
        if run.network.achieved is not None:
            a = run.network.achieved
            link += f" (achieved RTT {a.rtt_ms} ms, down {a.down_kbps} kbps, up {a.up_kbps} kbps)"
        lines.append(link)
    for check in results.checks:
        measured = measured_text(check)
        lines.append(f"{check.status.upper():5} {check.id:26} {measured}")
    s = results.summary
    lines.append(f"{s.pass_} pass, {s.fail} fail, {s.skip} skip, {s.error} error")
    return lines


def register(app: typer.Typer) -> None:
    """Add ``run`` to ``app``."""

    @app.command("run")
    def run_command(
        device: Annotated[str, typer.Option("--device", help="device id from the inventory")],
        network: Annotated[str, typer.Option("--network", help="network profile id")] = "none",
        scenario: Annotated[
            list[str] | None,
            typer.Option("--scenario", help="run only these checks (repeat it, or a, b, ...)"),
        ] = None,
        out_text: Annotated[
            str, typer.Option("--out", help="folder for results and reports")
        ] = "devicelab-out",
        inventory: Annotated[
            Path | None, typer.Option("--inventory", help="inventory.yaml to use")
        ] = None,
    ) -> None:
        """Run the device checks of the story on one device through one network profile."""
        from devicelab.cli.load import out_folder
        from devicelab.errors import BadInput
        from devicelab.lab import Lab
        from devicelab.teardown import DeviceLeftChanged

        def say(text: str) -> None:
            typer.echo(f"devicelab: {text}", err=True)

        # --scenario a --scenario b, or --scenario a,b (as --users 100,1000 reads).
        picked = [s.strip() for item in scenario or [] for s in item.split(",") if s.strip()]
        if scenario is not None and not picked:  # `--scenario ''` ran all 17 (7 minutes)
            raise BadInput(
                "--scenario names no check", hint="name checks (e.g. message_delivery), or drop it"
            )
        out = out_folder(out_text)  # `--out ''` wrote the reports into the current folder
        lab = Lab(device, network, scenarios=picked or None, inventory=inventory, say=say)
        try:
            results = lab.run(out)
        except DeviceLeftChanged as exc:  # the checks ran: shown, then the phone's state
            if exc.results is not None:
                _print_summary(exc.results, out)
            raise
        _print_summary(results, out)
        raise typer.Exit(results.exit_code())


def _print_summary(results: Results, out: Path) -> None:
    for line in summary_lines(results):
        typer.echo(line)
    typer.echo(f"results: {out / 'results.json'}")
