"""``python -m devicelab`` runs the CLI."""

from devicelab.console import main

__all__: list[str] = []

main()
