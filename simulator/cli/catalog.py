"""`quadrant hw ...` and `quadrant model ...`: the hardware and model catalogues."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import as_yaml, emit_frame, emit_json, guarded, hw_app, model_app
from ._params import YAML_EXTS, in_file, out_file


@hw_app.command("list")
@guarded
def hw_list(json_out: bool = typer.Option(False, "--json", help="Print a JSON list of objects with `id`.")):
    """List hardware profiles with their headline figures (dense peaks)."""
    from ..commands import hardware_table

    df = hardware_table()
    if json_out:
        emit_frame(df, True)
    else:
        from ..report.render import hardware_list_text

        typer.echo(hardware_list_text(df))


@hw_app.command("show")
@guarded
def hw_show(hw_id: str = typer.Argument(..., help="Profile id (see `quadrant hw list`) or a YAML path."),
            json_out: bool = typer.Option(False, "--json", help="Print the profile as JSON.")):
    """Show one hardware profile: datasheet figures with sources, and its efficiency block."""
    from ..commands import hardware_detail

    detail = hardware_detail(hw_id)
    emit_json(detail) if json_out else typer.echo(as_yaml(detail))


@model_app.command("list")
@guarded
def model_list(json_out: bool = typer.Option(False, "--json", help="Print a JSON list of objects with `id`.")):
    """List model specs with derived total/active parameters and KV bytes per token."""
    from ..commands import model_table

    df = model_table()
    if json_out:
        emit_frame(df, True)
    else:
        from ..report.render import model_list_text

        typer.echo(model_list_text(df))


@model_app.command("show")
@guarded
def model_show(model_id: str = typer.Argument(..., help="Model id or a YAML path."),
               json_out: bool = typer.Option(False, "--json", help="Print the spec as JSON.")):
    """Show a model spec and what follows from it (parameter counts, KV bytes per token)."""
    from ..commands import model_detail

    detail = model_detail(model_id)
    emit_json(detail) if json_out else typer.echo(as_yaml(detail))


@model_app.command("import")
@guarded
def model_import(config: Path = typer.Argument(..., parser=in_file(), help="A HuggingFace config.json."),
                 model_id: str = typer.Option(..., "--id", help="Id for the new spec (file name)."),
                 out: Path = typer.Option(None, "--out", parser=out_file(YAML_EXTS),
                             help="Where to write the YAML, named <id>.yaml (default: print it)."),
                 source: str = typer.Option("", "--source", help="Citation for the config (URL or repo@rev).")):
    """Read a HuggingFace config.json (Llama/Qwen dense, Mixtral, DBRX, Qwen3-MoE, DeepSeek-V3/Kimi-K2)
    into a model spec YAML."""
    from ..commands import import_model

    text = import_model(config, model_id, source, out)
    if out:
        from ..io import atomic_write_text

        atomic_write_text(out, text)
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text, nl=False)
