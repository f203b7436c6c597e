"""``python -m devicelab`` runs the CLI."""

from devicelab.console import main

main()
