"""`quadrant whatif`: score one plan, quadrant by quadrant."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import PRECISION_HELP, app, emit_json, explicit_flags, guarded, metadata, timing_files, timing_label
from ._params import (
    KV_PRECISION_HELP,
    MAX_DRAFT_TOKENS,
    PLOT_EXTS,
    count,
    in_file,
    in_file_or_id,
    kv_precision,
    out_file,
    real,
    timing_option,
)

# the help's panels (each lays out its own columns, so one long flag does not squeeze every other's help)
PLAN = "The plan"
PREC = "Precision"
WORK = "Batch and lengths"
PD = "Separate prefill and decode pools (P/D disaggregation)"
SPEC = "Speculative decoding / MTP"
COST = "Timing model and cost"
OUTPUT = "Output"


@app.command()
@guarded
def whatif(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", "-m", rich_help_panel=PLAN,
                              help="Model id (quadrant model list), YAML path, or a name "
                                   "it goes by (e.g. meta-llama/Llama-3.1-8B-Instruct)."),
    hardware: str = typer.Option("h100-sxm", "--hardware", rich_help_panel=PLAN,
                                 help="Device profile for every quadrant: an id, a YAML "
                                      "path, or a name it goes by (e.g. H100, 'NVIDIA H100 80GB HBM3')."),
    devices: int = typer.Option(8, "--devices", rich_help_panel=PLAN, parser=count(1),
                                help="Devices of one model replica."),
    tp: int = typer.Option(None, "--tp", rich_help_panel=PLAN, parser=count(1),
                           help="Tensor parallel size (default: devices / (pp x dp))."),
    pp: int = typer.Option(1, "--pp", rich_help_panel=PLAN, parser=count(1), help="Pipeline stages."),
    ep: int = typer.Option(1, "--ep", rich_help_panel=PLAN, parser=count(1), help="Expert parallel size for MoE FFN."),
    dp: int = typer.Option(None, "--dp", rich_help_panel=PLAN, parser=count(1),
                           help="Attention data-parallel ranks (tp x dp x pp = devices; default: devices / (tp x pp), "
                                "1 when --tp is not given)."),
    expert_tp: int = typer.Option(None, "--expert-tp", rich_help_panel=PLAN, parser=count(1),
                                  help="TP inside each expert group. Default: devices / (pp x ep), so with attention "
                                       "DP and no EP the experts are TP-sharded over tp x dp, as vLLM and SGLang "
                                       "shard them."),
    precision: str = typer.Option(None, "--precision", rich_help_panel=PREC,
                                  help=f"Weights/activations, all quadrants: {PRECISION_HELP} "
                                       "(default bf16; with --deployment it overrides the file)."),
    attn_precision: str = typer.Option(None, "--attn-precision", rich_help_panel=PREC,
                                       help="Override for the attention quadrants."),
    ffn_precision: str = typer.Option(None, "--ffn-precision", rich_help_panel=PREC,
                                      help="Override for the FFN quadrants (e.g. w4a8)."),
    kv_precision: str = typer.Option("bf16", "--kv-precision", rich_help_panel=PREC, parser=kv_precision(),
                                     help=f"KV cache: {KV_PRECISION_HELP}."),
    kv_scale_tokens: int = typer.Option(128, "--kv-scale-tokens", rich_help_panel=PREC, parser=count(1),
                                        help="Tokens per KV quantisation scale."),
    batch: int = typer.Option(64, "--batch", rich_help_panel=WORK, parser=count(1),
                              help="Concurrent decode sequences."),
    isl: int = typer.Option(2048, "--isl", rich_help_panel=WORK, parser=count(1),
                            help="Input (prompt) tokens per request."),
    osl: int = typer.Option(512, "--osl", rich_help_panel=WORK, parser=count(1), help="Output tokens per request."),
    prefill_batch: int = typer.Option(1, "--prefill-batch", rich_help_panel=WORK, parser=count(1),
                                      help="Prompts prefilled together (TTFT batch)."),
    chunk: int = typer.Option(None, "--chunk", rich_help_panel=WORK, parser=count(1),
                               help="Prefill chunk tokens (default: the whole prompt); with --pp: chunked PP."),
    prefill_hardware: str = typer.Option(None, "--prefill-hardware", rich_help_panel=PD,
                                         help="Separate prefill pool device (PD disagg)."),
    prefill_devices: int = typer.Option(None, "--prefill-devices", rich_help_panel=PD, parser=count(1),
                                        help="Devices of the prefill pool."),
    prefill_tp: int = typer.Option(None, "--prefill-tp", rich_help_panel=PD, parser=count(1),
                                   help="TP of the prefill pool."),
    prefill_pp: int = typer.Option(None, "--prefill-pp", rich_help_panel=PD, parser=count(1),
                                   help="Pipeline stages of the prefill pool (chunked PP prefill with --chunk)."),
    decode_hardware: str = typer.Option(None, "--decode-hardware", rich_help_panel=PD,
                                        help="Separate decode pool device (PD disagg)."),
    decode_devices: int = typer.Option(None, "--decode-devices", rich_help_panel=PD, parser=count(1),
                                       help="Devices of the decode pool."),
    decode_tp: int = typer.Option(None, "--decode-tp", rich_help_panel=PD, parser=count(1),
                                  help="TP of the decode pool (attention)."),
    decode_ep: int = typer.Option(None, "--decode-ep", rich_help_panel=PD, parser=count(1),
                                  help="EP of the decode pool (MoE FFN)."),
    spec_draft: int = typer.Option(0, "--spec-draft", "--spec-tokens", parser=count(0, MAX_DRAFT_TOKENS),
                                   rich_help_panel=SPEC, metavar="N",
                                   help="Speculative decoding: draft tokens per step (0: off)."),
    spec_accept: float = typer.Option(0.7, "--spec-accept", "--spec-acceptance", parser=real(0, 1),
                                      rich_help_panel=SPEC, metavar="P",
                                      help="Per-token acceptance rate, 0..1 (0.7 is an illustrative default: measure "
                                           "yours; DeepSeek-V3's MTP accepts 0.85-0.9, its report's section 5.4.3)."),
    spec_draft_cost: float = typer.Option(0.05, "--spec-draft-cost", parser=real(0, 1), rich_help_panel=SPEC,
                                          metavar="F",
                                          help="Draft step time / target step time, 0..1 (0.05: a small draft model, "
                                               "illustrative; an MTP module is one extra layer, about 1 / layers)."),
    overlap_comm: bool = typer.Option(False, "--overlap-comm", rich_help_panel=COST,
                                      help="Hide collectives behind compute."),
    price: list[str] = typer.Option(None, "--price", rich_help_panel=COST,
                                    help="Device price, USD per device-hour (> 0): ID=USD for "
                                         "one device of the plan (repeatable, e.g. --price h20=1.20, as sweep and plan "
                                         "take it), or a bare USD for every device (e.g. --price 2.5)."),
    deployment: Path = typer.Option(None, "--deployment", rich_help_panel=PLAN, parser=in_file_or_id(),
                                    help="Deployment YAML (pools, per-quadrant plans)."),
    calibration: Path = typer.Option(None, "--calibration", rich_help_panel=COST, parser=in_file(),
                                     help="Calibration overlay from `quadrant calibrate`."),
    timing: str = timing_option(panel=COST),
    json_out: bool = typer.Option(False, "--json", rich_help_panel=OUTPUT, help="Print the result as JSON."),
    plot: Path = typer.Option(None, "--plot", rich_help_panel=OUTPUT, parser=out_file(PLOT_EXTS),
                              help="Write the roofline plot (PNG/SVG/PDF)."),
    breakdown_plot: Path = typer.Option(None, "--breakdown-plot", rich_help_panel=OUTPUT, parser=out_file(PLOT_EXTS),
                                        help="Write the quadrant breakdown bars."),
):
    """Score one plan: per-quadrant time, FLOP, bytes, communication, intensity and bound; TTFT, TPOT,
    throughput, memory fit per device and cost per million output tokens.

    Example: quadrant whatif --model dbrx --hardware h100-sxm --devices 8 --batch 64 --isl 2048 --osl 512
    """
    from ..commands import run_whatif

    if plot and breakdown_plot and plot.resolve() == breakdown_plot.resolve():
        raise typer.BadParameter(f"{breakdown_plot} is --plot's file too; give the two plots two files",
                                 param_hint="'--breakdown-plot'")
    opts = {k: v for k, v in locals().items() if k not in ("ctx", "json_out", "plot", "breakdown_plot", "run_whatif")}
    opts["_explicit"] = explicit_flags(ctx)
    if not deployment and not spec_draft:  # (the acceptance and draft cost describe a draft: without one, unused)
        for name in ("spec_accept", "spec_draft_cost"):
            if name in opts["_explicit"]:
                raise typer.BadParameter("describes the speculative draft: give --spec-draft N (N >= 1) too",
                                         param_hint=f"'--{name.replace('_', '-')}'")
    res = run_whatif(opts)
    import math

    if not (math.isfinite(res.ttft_s) and math.isfinite(res.tpot_s)) or res.ttft_s <= 0 or res.tpot_s <= 0:
        from ..errors import SimulatorError

        raise SimulatorError(f"the plan's times are not finite and positive (TTFT {res.ttft_s}, TPOT {res.tpot_s}): "
                             "check the hardware profile's peaks and bandwidths")
    meta = metadata(timing_model=timing_label(timing, calibration),
                    inputs={"deployment": deployment, "calibration": calibration, "timing": timing_files(timing)}
                    if deployment else {"model": model, "hardware": [hardware, prefill_hardware, decode_hardware],
                                        "calibration": calibration, "timing": timing_files(timing)})
    _report_whatif(res, json_out, plot, breakdown_plot, meta)


def _report_whatif(res, json_out: bool, plot: Path | None, breakdown_plot: Path | None, meta: dict | None = None
                   ) -> None:
    from ..report.render import whatif_text

    if not res.fits:  # the run ends in an error (exit 1): no files are written for it
        plot = breakdown_plot = None
    if plot:
        from ..report.plots import roofline

        roofline(res, plot)
    if breakdown_plot:
        from ..report.plots import quadrant_breakdown

        quadrant_breakdown(res.quadrants, breakdown_plot, f"{res.model_id} per-quadrant time")
    if json_out:
        emit_json(res.to_dict(), meta)
    else:
        typer.echo(whatif_text(res))
        for p in (plot, breakdown_plot):
            if p:
                typer.echo(f"wrote {p}")
    if not res.fits:
        bad = next(m for m in res.memory if not m.fits)
        typer.echo(f"error: {res.model_id} does not fit: {bad.explain()}", err=True)
        raise typer.Exit(1)
