"""``python -m simulator.cli``."""

from . import main

main()
