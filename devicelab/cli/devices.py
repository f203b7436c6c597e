"""``devicelab devices``: the inventory and the live state of each device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from devicelab.platforms.state import DeviceState

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``devices`` to ``app``."""

    @app.command("devices")
    def devices_command(
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
        inventory: Annotated[
            Path | None, typer.Option("--inventory", help="inventory.yaml to use")
        ] = None,
    ) -> None:
        """List the lab's devices with their state (online, offline, unauthorized, ...)."""
        from devicelab.config import load_inventory
        from devicelab.platforms.state import device_states

        states = device_states(load_inventory(inventory))
        if as_json:
            typer.echo(json.dumps([s.as_dict() for s in states], indent=2))
        else:
            _print_table(states)
        if states and all(s.state == "unknown" for s in states):
            # Nothing could be asked: an environment problem, as for every command (exit
            # 3). One unknown platform beside known ones is a state in the list (exit 0).
            typer.echo(f"devicelab: error: no device's state could be read: {states[0].detail}",
                       err=True)  # fmt: skip
            raise typer.Exit(3)


def _print_table(states: list[DeviceState]) -> None:
    # Columns as wide as their longest entry: a fixed width ran long ids into the next.
    header = ("ID", "PLATFORM", "MODEL", "OS")
    rows = [(s.device.id, s.device.platform, s.device.model, s.device.os) for s in states]
    widths = [max(len(cell) for cell in column) + 2 for column in zip(header, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "".join(f"{cell:{width}}" for cell, width in zip(cells, widths, strict=True))

    typer.echo(f"{line(header)}STATE")
    for s, row in zip(states, rows, strict=True):
        typer.echo(f"{line(row)}{s.state}  {s.detail}".rstrip())
        if left := s.left_line():
            typer.echo(f"{'':{widths[0]}}{left}")
