"""Shared pieces of the ``quadrant`` command line: the typer apps, the error guard and JSON output.

Exit codes: 0 ok, 1 a plan that does not fit / an SLO that is not met where asked, 2 bad input.
"""

from __future__ import annotations

import functools
import json
import traceback
from pathlib import Path

import typer

from ..errors import InfeasibleError, SimulatorError

app = typer.Typer(
    help=("quadrant-sim: score LLM inference on a fleet before you buy it.\n\n"
          "Every model step is split into four quadrants - prefill x decode crossed with attention x FFN - "
          "and costed with an analytic roofline (datasheet peaks x measured/cited efficiencies + fixed "
          "per-kernel overhead + alpha-beta collectives). `whatif` scores one plan; `simulate` runs a "
          "discrete-event simulation of real traffic; `sweep` searches plans; `bench`/`validate`/`calibrate` "
          "check the numbers against real kernels."),
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
hw_app = typer.Typer(help="Hardware profiles (hardware/<id>.yaml).", no_args_is_help=True)
model_app = typer.Typer(help="Model specs (workloads/models/<id>.yaml).", no_args_is_help=True)
bench_app = typer.Typer(help="The torch micro-benchmark harness (needs the `bench` extra).", no_args_is_help=True)
app.add_typer(hw_app, name="hw")
app.add_typer(model_app, name="model")
app.add_typer(bench_app, name="bench")

_STATE = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors.")):
    _STATE["debug"] = debug


def guarded(fn):
    """Turn library errors into one line on stderr and a non-zero exit (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except SimulatorError as exc:
            if _STATE["debug"]:
                traceback.print_exc()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1 if isinstance(exc, InfeasibleError) else 2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def emit_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=False, default=_json_default))


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def emit_frame(df, json_out: bool) -> None:
    """A catalogue listing: JSON records or an aligned table."""
    if json_out:
        emit_json(df.to_dict(orient="records"))
    else:
        from ..report.render import table

        typer.echo(table(list(df.columns), df.astype(str).values.tolist()))


def as_yaml(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, width=110, allow_unicode=True).rstrip()


PRECISION_HELP = "bf16 | fp16 | fp32 | fp8 | int8 | w4a8 | w4a16 | fp4"
