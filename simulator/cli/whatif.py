"""`quadrant whatif`: score one plan, quadrant by quadrant."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import PRECISION_HELP, app, emit_json, guarded


@app.command()
@guarded
def whatif(
    model: str = typer.Option(None, "--model", "-m", help="Model id (quadrant model list) or YAML path."),
    hardware: str = typer.Option("h100-sxm", "--hardware", help="Device profile for every quadrant."),
    devices: int = typer.Option(8, "--devices", help="Devices of one model replica."),
    tp: int = typer.Option(None, "--tp", help="Tensor parallel size (default: devices / (pp x dp))."),
    pp: int = typer.Option(1, "--pp", help="Pipeline stages."),
    ep: int = typer.Option(1, "--ep", help="Expert parallel size for MoE FFN."),
    dp: int = typer.Option(None, "--dp", help="Attention data-parallel size."),
    expert_tp: int = typer.Option(None, "--expert-tp", help="TP inside each expert group (default devices/ep)."),
    precision: str = typer.Option(None, "--precision", help=f"Weights/activations, all quadrants: {PRECISION_HELP} "
                                  "(default bf16; with --deployment it overrides the file)."),
    attn_precision: str = typer.Option(None, "--attn-precision", help="Override for the attention quadrants."),
    ffn_precision: str = typer.Option(None, "--ffn-precision", help="Override for the FFN quadrants (e.g. w4a8)."),
    kv_precision: str = typer.Option("bf16", "--kv-precision", help="KV cache: bf16 | fp8 | int8."),
    kv_scale_tokens: int = typer.Option(128, "--kv-scale-tokens", help="Tokens per KV quantisation scale."),
    batch: int = typer.Option(64, "--batch", help="Concurrent decode sequences."),
    isl: int = typer.Option(2048, "--isl", help="Input (prompt) tokens per request."),
    osl: int = typer.Option(512, "--osl", help="Output tokens per request."),
    prefill_batch: int = typer.Option(1, "--prefill-batch", help="Prompts prefilled together (TTFT batch)."),
    chunk: int = typer.Option(0, "--chunk", help="Prefill chunk tokens (0 = whole prompt); with --pp: chunked PP."),
    overlap_comm: bool = typer.Option(False, "--overlap-comm", help="Hide collectives behind compute."),
    prefill_hardware: str = typer.Option(None, "--prefill-hardware", help="Separate prefill pool device (PD disagg)."),
    prefill_devices: int = typer.Option(None, "--prefill-devices", help="Devices of the prefill pool."),
    prefill_tp: int = typer.Option(None, "--prefill-tp"),
    prefill_pp: int = typer.Option(None, "--prefill-pp"),
    decode_hardware: str = typer.Option(None, "--decode-hardware", help="Separate decode pool device (PD disagg)."),
    decode_devices: int = typer.Option(None, "--decode-devices"),
    decode_tp: int = typer.Option(None, "--decode-tp"),
    decode_ep: int = typer.Option(None, "--decode-ep"),
    spec_draft: int = typer.Option(0, "--spec-draft", help="Speculative decoding: draft tokens per step."),
    spec_accept: float = typer.Option(0.7, "--spec-accept", help="Per-token acceptance rate."),
    spec_draft_cost: float = typer.Option(0.05, "--spec-draft-cost", help="Draft step time / target step time."),
    price: float = typer.Option(None, "--price", help="Override the device price, USD per device-hour."),
    deployment: Path = typer.Option(None, "--deployment", help="Deployment YAML (pools, per-quadrant plans)."),
    calibration: Path = typer.Option(None, "--calibration",
                                     help="Calibration overlay (YAML, from `quadrant calibrate`) or a measured kernel "
                                          "table (CSV): the same as --timing calibrated:PATH / measured:PATH."),
    timing: str = typer.Option(None, "--timing", help="Timing model: roofline (default), calibrated:OVERLAY.yaml "
                               "(from `quadrant calibrate`) or measured:KERNELS.csv (your measured table; the roofline "
                               "answers outside its coverage). `measured:CSV+calibrated:YAML` combines them."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    plot: Path = typer.Option(None, "--plot", help="Write the roofline plot (PNG/SVG/PDF)."),
    breakdown_plot: Path = typer.Option(None, "--breakdown-plot", help="Write the quadrant breakdown bars."),
):
    """Score one plan: per-quadrant time, FLOP, bytes, communication, intensity and bound; TTFT, TPOT,
    throughput, memory fit per device and cost per million output tokens.

    Example: quadrant whatif --model dbrx --hardware h100-sxm --devices 8 --batch 64 --isl 2048 --osl 512
    """
    from ..commands import run_whatif

    opts = {k: v for k, v in locals().items() if k not in ("json_out", "plot", "breakdown_plot", "run_whatif")}
    res = run_whatif(opts)
    _report_whatif(res, json_out, plot, breakdown_plot)


def _report_whatif(res, json_out: bool, plot: Path | None, breakdown_plot: Path | None) -> None:
    from ..report.render import whatif_text

    if plot:
        from ..report.plots import roofline

        roofline(res, plot)
    if breakdown_plot:
        from ..report.plots import quadrant_breakdown

        quadrant_breakdown(res.quadrants, breakdown_plot, f"{res.model_id} per-quadrant time")
    if json_out:
        emit_json(res.to_dict())
    else:
        typer.echo(whatif_text(res))
        for p in (plot, breakdown_plot):
            if p:
                typer.echo(f"wrote {p}")
    if not res.fits:
        bad = next(m for m in res.memory if not m.fits)
        typer.echo(f"error: {res.model_id} does not fit: {bad.explain()}", err=True)
        raise typer.Exit(1)
