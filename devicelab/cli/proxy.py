"""``devicelab proxy``: (being written)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the proxy command(s) to ``app``."""
