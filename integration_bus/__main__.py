"""``python -m integration_bus`` is the ``bus`` command."""

from integration_bus.cli import main

main()
