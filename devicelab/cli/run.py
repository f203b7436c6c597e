"""``devicelab run``: one device, one network, the story's device checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from devicelab.errors import EnvironmentProblem

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``run`` to ``app``."""

    @app.command("run")
    def run_command(
        device: Annotated[str, typer.Option("--device", help="device id from the inventory")],
        network: Annotated[str, typer.Option("--network", help="network profile id")] = "none",
        scenario: Annotated[
            list[str] | None, typer.Option("--scenario", help="run only these checks")
        ] = None,
        out: Annotated[Path, typer.Option("--out", help="folder for results and reports")] = Path(
            "devicelab-out"
        ),
        inventory: Annotated[
            Path | None, typer.Option("--inventory", help="inventory.yaml to use")
        ] = None,
    ) -> None:
        """Run the device checks of the story on one device through one network profile."""
        from devicelab import config

        config.device(device, config.load_inventory(inventory))
        config.network_profile(network)
        # The ids are checked first so a typo gets its "did you mean" today already.
        raise EnvironmentProblem(
            "the device run (scenarios, probes, samplers, capacitor harness) is not built yet",
            hint="`devicelab backend check` runs the story's server-side checks today",
        )
