"""``devicelab battery``: battery_drain on every phone of the farm at once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from devicelab.farm import FarmResult

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``battery`` to ``app``."""

    @app.command("battery")
    def battery_command(
        device: Annotated[
            list[str] | None,
            typer.Option(
                "--device",
                help="phones to run (default: every phone whose power the inventory can cut)",
            ),
        ] = None,
        network: Annotated[str, typer.Option("--network", help="network profile id")] = "wifi",
        duration: Annotated[
            str, typer.Option("--duration", help="how long each phone runs, e.g. 1h, 30m")
        ] = "1h",
        out_text: Annotated[
            str, typer.Option("--out", help="folder for the farm's results")
        ] = "devicelab-out/battery",
        inventory: Annotated[
            Path | None, typer.Option("--inventory", help="inventory.yaml to use")
        ] = None,
    ) -> None:
        """The story's battery drain (1 hour of messaging, < 10 % per hour) on every phone of
        the farm at once, each restored after; farm.json and farm.md sum it up."""
        from devicelab.cli.load import out_folder, parse_duration
        from devicelab.farm import BatteryFarm

        out = out_folder(out_text)

        def say(text: str) -> None:
            typer.echo(f"devicelab: {text}", err=True)

        farm = BatteryFarm(
            device, network=network, duration_s=parse_duration(duration), inventory=inventory,
            say=say,
        )  # fmt: skip
        try:
            result = farm.run(out)
        except KeyboardInterrupt:  # also SIGTERM, SIGHUP: farm.json holds the rows so far
            if farm.result is not None:
                _summary(farm.result, out)
            raise
        _summary(result, out)
        raise typer.Exit(result.exit_code())


def _summary(result: FarmResult, out: Path) -> None:
    for line in result.table():
        typer.echo(line)
    typer.echo(f"farm: {out / 'farm.json'}")
