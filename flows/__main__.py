"""``python -m flows`` runs the `smite` command line."""

from flows.cli import main

main()
