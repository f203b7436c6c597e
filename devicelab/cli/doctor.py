"""``devicelab doctor``: what is installed and what is missing, with the fixes."""

from __future__ import annotations

import json
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to ``app``."""

    @app.command("doctor")
    def doctor_command(
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Check the tools devicelab needs; exit 3 when a required one is missing."""
        from dataclasses import asdict

        from devicelab.doctor import diagnose

        findings = diagnose()
        if as_json:
            typer.echo(json.dumps([asdict(f) for f in findings], indent=2))
        else:
            width = max(len(f.name) for f in findings) + 2
            for f in findings:
                mark = "ok " if f.found else ("MISSING" if f.required else "missing")
                line = f"{mark:8}{f.name:{width}}{f.detail}"
                fix = f"\n{'':{8 + width}}fix: {f.fix}  ({f.needed_for})"
                typer.echo(line if f.found else line + fix)
        if any(f.required and not f.found for f in findings):
            raise typer.Exit(3)
