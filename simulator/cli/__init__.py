"""The ``quadrant`` command line. It owns only I/O: parse options, call the library, render, exit.

One module per command group registers its commands on the shared typer app (``_common.app``);
importing this package registers them all. Exit codes: 0 ok, 1 a plan that does not fit / an SLO
that is not met where asked / nothing finished, 2 bad input (one line on stderr; ``--debug`` for the
traceback).
"""

from __future__ import annotations

import sys

from . import catalog, demo, plan, simulate, sweep, validation, whatif  # noqa: F401  (registers the commands)
from ._common import app

__all__ = ["app", "main"]


def main() -> None:  # console-script entry point
    _slim(sys.argv[1:])()


def _slim(argv: list[str]):
    """The app with only the command named on the command line, so that typer builds one command's options
    instead of every command's (a fast start); the whole app for help, --version or an unknown name."""
    import typer

    name = next((a for a in argv if not a.startswith("-")), None)
    cmds = [c for c in app.registered_commands
            if (c.name or c.callback.__name__.replace("_", "-")) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not name or len(cmds) + len(groups) != 1:
        return app
    slim = typer.Typer()
    slim.__dict__.update(app.__dict__)  # same callback (--debug, --version), class and settings
    slim.registered_commands, slim.registered_groups = cmds, groups
    return slim
