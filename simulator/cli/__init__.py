"""The ``quadrant`` command line. It owns only I/O: parse options, call the library, render, exit.

One module per command group registers its commands on the shared typer app (``_common.app``);
importing this package registers them all. Exit codes: 0 ok, 1 a plan that does not fit / an SLO
that is not met where asked, 2 bad input.
"""

from __future__ import annotations

import sys

import typer

from ..errors import SimulatorError
from . import catalog, demo, plan, simulate, sweep, validation, whatif  # noqa: F401  (registers the commands)
from ._common import app

__all__ = ["app", "main"]


def main() -> None:  # console-script entry point
    try:
        app()
    except SimulatorError as exc:  # pragma: no cover - commands are guarded
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
