"""``devicelab devices``: the inventory and the live state of each device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

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
            return
        typer.echo(f"{'ID':18}{'PLATFORM':10}{'MODEL':26}{'OS':14}STATE")
        for s in states:
            d = s.device
            typer.echo(f"{d.id:18}{d.platform:10}{d.model:26}{d.os:14}{s.state}  {s.detail}")
