"""``python -m devicelab`` runs the CLI."""

from devicelab.cli import main

main()
