"""`quadrant demo`: the built-in example."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import app, guarded
from ._params import out_dir


@app.command()
@guarded
def demo(out: Path = typer.Option(Path("quadrant-demo"), "--out", parser=out_dir(),
                                  help="Folder for the demo's plots and its simulation's CSVs.")):
    """Run the built-in example: DBRX on 8 x H100 (what-if table + roofline plot), then the same
    decode on H20 for contrast, then a short simulated chat workload."""
    from ..commands import run_demo

    for line in run_demo(out):
        typer.echo(line)
