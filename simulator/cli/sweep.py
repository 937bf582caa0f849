"""`quadrant sweep`: score many plans in one vectorised pass."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import SimulatorError
from ._common import app, emit_json, guarded, metadata, timing_files, timing_label
from ._params import (
    CSV_EXTS,
    KV_PRECISION_HELP,
    PLOT_EXTS,
    count,
    duration,
    int_list,
    kv_precision,
    out_file,
    timing_option,
    tpot_slo_duration,
)
from ._params import rate as rate_flag


@app.command()
@guarded
def sweep(
    model: str = typer.Option(None, "--model", "-m", help="Model id (not needed with --deployment)."),
    deployment: str = typer.Option(None, "--deployment", help="With --tpot-slo: the largest batch under the TPOT "
                                                              "target for this deployment (A/F included)."),
    hardware: str = typer.Option("h100-sxm", "--hardware", help="Comma-separated profile ids."),
    devices: int = typer.Option(8, "--devices", parser=count(1), help="Devices per replica."),
    isl: int = typer.Option(2048, "--isl", parser=count(1), help="Input (prompt) tokens per request."),
    osl: int = typer.Option(512, "--osl", parser=count(1), help="Output tokens per request."),
    precisions: str = typer.Option("bf16,fp8", "--precision", help="Comma-separated precisions to try."),
    kv_precision: str = typer.Option("bf16", "--kv-precision", parser=kv_precision(),
                                     help=f"KV cache precision: {KV_PRECISION_HELP}."),
    batches: str = typer.Option("1,2,4,8,16,32,64,128,256", "--batches", parser=int_list(1, 1_000_000),
                                help="Comma-separated decode batches."),
    tpot_slo: float = typer.Option(None, "--tpot-slo", parser=tpot_slo_duration(),
                                  help="Keep configurations whose TPOT <= this (e.g. 50ms): a decode step plus the "
                                       "batch's other prefills spread over a request's output, as the "
                                       "throughput counts them."),
    ttft_slo: float = typer.Option(None, "--ttft-slo", parser=duration(),
                                  help="Keep configurations with TTFT <= this (e.g. 2s)."),
    rate: float = typer.Option(None, "--rate", parser=rate_flag(),
                              help="Capacity planning: requests to serve, e.g. 20/s; $/Mtok is then "
                                   "the fleet's cost at this rate."),
    price: list[str] = typer.Option(None, "--price", help="ID=USD_PER_HOUR, repeatable: a device's price per "
                                    "device-hour over its profile's (e.g. --price h100-sxm=2.10); a bare "
                                    "USD_PER_HOUR: every device's."),
    out: Path = typer.Option(None, "--out", parser=out_file(CSV_EXTS), help="Write every configuration to this CSV."),
    plot: Path = typer.Option(None, "--plot", parser=out_file(PLOT_EXTS),
                              help="Write the Pareto plot (throughput/device vs TPOT)."),
    timing: str = timing_option(),
    json_out: bool = typer.Option(False, "--json", help="Print the Pareto front as JSON."),
):
    """Score every (hardware, precision, TP, EP, batch) plan in one vectorised pass; print the Pareto
    front of output tokens/s per device against TPOT among plans that fit (and meet the SLOs), with
    replicas and $/hour for --rate. Exit 1 when none does (the message names the closest).

    Examples:\n
      quadrant sweep --model dbrx --hardware h100-sxm,h200-sxm,h20 --devices 8 --isl 2048 --osl 512 --tpot-slo 50ms\n
      quadrant sweep --deployment dbrx-8xh100 --tpot-slo 50ms
    """
    from ..commands import run_sweep
    if deployment:
        from ..commands import run_sweep_deployment

        if model:
            raise SimulatorError("--model and --deployment: give one (the deployment file names its model)")
        if price:
            raise SimulatorError("--price with --deployment: the largest-batch answer has no cost in it (price the "
                                 "deployment's pools in its file, or sweep with --model)")
        # the deployment file fixes the layout, and the answer is one batch: the grid and fleet flags do not apply
        unused = [flag for flag, given in (
            ("--hardware", hardware != "h100-sxm"), ("--devices", devices != 8),
            ("--precision", precisions != "bf16,fp8"), ("--kv-precision", kv_precision != "bf16"),
            ("--batches", batches != "1,2,4,8,16,32,64,128,256"),
            ("--ttft-slo", ttft_slo is not None), ("--rate", rate is not None), ("--out", out is not None),
            ("--plot", plot is not None)) if given]
        if unused:
            raise SimulatorError(f"{', '.join(unused)} with --deployment: the file sets the layout and the answer is "
                                 "the largest batch under --tpot-slo (sweep with --model to use them)")
        if not tpot_slo:
            raise SimulatorError("--deployment needs --tpot-slo (the largest batch under that TPOT is the answer)")
        res = run_sweep_deployment(deployment, tpot_slo, isl, osl, timing)
        if json_out:
            emit_json(res, metadata(timing_model=timing_label(timing, None),
                                    inputs={"deployment": deployment, "timing": timing_files(timing)}))
        else:
            served = res["tpot_served_s"]
            tpot = (f"TPOT {served * 1e3:.2f} ms: a {res['tpot_s'] * 1e3:.2f} ms step and the batch's prefills"
                    if served > res["tpot_s"] else f"TPOT {served * 1e3:.2f} ms")
            typer.echo(f"{res['deployment']}: largest decode batch with TPOT <= {tpot_slo * 1e3:.3g} ms is "
                       f"{res['batch']} ({tpot}; limited by {res['limit_note']}); "
                       f"{res['decode_tokens_per_s_per_device']:,.1f} decode tokens/s per decode device "
                       f"(ISL {isl}, OSL {osl})")
        return
    if not model:
        raise SimulatorError("--model is required (or pass --deployment FILE --tpot-slo S)")
    df, front = run_sweep(model, hardware, devices, isl, osl, precisions, kv_precision, batches, tpot_slo, ttft_slo,
                          rate, timing, price)
    if out:
        from ..io import atomic_write

        atomic_write(out, lambda tmp: df.to_csv(tmp, index=False))
    if plot:
        from ..report.plots import pareto

        ok = df[df.fits]
        pareto(ok.assign(config=ok.hardware + " " + ok.precision), "tpot_served_s", "output_tokens_per_s_per_device",
               plot, front=front, slo={"tpot_served_s": tpot_slo, "ttft_s": ttft_slo},
               title=f"{model}, ISL {isl}, OSL {osl}: throughput per device vs TPOT (plans that fit)")
    if json_out:
        cheap = df.attrs.get("cheapest")
        emit_json({"configurations": len(df), "fit": int(df.fits.sum()), "meet_slos": df.attrs.get("meet_slos"),
                   "front": front.to_dict(orient="records"),
                   # with --rate: the cheapest priced fleet meeting the SLOs (null: none priced), those left out
                   **({"cheapest": cheap, "unpriced": df.attrs.get("unpriced", 0)} if rate else {})},
                  metadata(timing_model=timing_label(timing, None),
                           inputs={"model": model, "hardware": hardware.split(","), "timing": timing_files(timing)}))
        return
    from ..report.render import sweep_text

    typer.echo(sweep_text(df, front))
    for p in (out, plot):
        if p:
            typer.echo(f"wrote {p}")
